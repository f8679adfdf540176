//! Copies between buckets of one store: the same endpoint and the same
//! credentials, so the store can copy an object from one bucket to another
//! without its bytes passing through this machine (S3's CopyObject).
//!
//! `object_store` copies only inside one bucket, so the backends crate,
//! which holds the endpoint and credentials, provides a [`BucketCopy`] for
//! the stores that can; a [`StoreTree`](super::StoreTree) carries it.

use async_trait::async_trait;

/// A store's bucket that objects can be copied into from the store's other
/// buckets.
#[async_trait]
pub trait BucketCopy: Send + Sync + std::fmt::Debug {
    /// What two buckets must share to copy between each other: the
    /// endpoint (an R2 jurisdiction has its own), the region and the
    /// credentials.
    fn scope(&self) -> &str;

    /// The bucket objects are copied into.
    fn bucket(&self) -> &str;

    /// Copies the object `from_key` of `from_bucket` (in the same scope)
    /// to `to_key` in this bucket, with its attributes, in one request.
    ///
    /// # Errors
    /// The store's error; `NotFound` when the source object is missing.
    async fn copy(
        &self,
        from_bucket: &str,
        from_key: &str,
        to_key: &str,
    ) -> object_store::Result<()>;
}
