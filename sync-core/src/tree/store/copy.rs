//! Copies inside one store the store's client cannot make: between buckets
//! of one store (the same endpoint and the same credentials), and of
//! objects larger than one copy request takes (S3's CopyObject stops at
//! 5 GiB), so no byte passes through this machine.
//!
//! `object_store` copies only inside one bucket, so the backends crate,
//! which holds the endpoint and credentials, provides a [`BucketCopy`] for
//! the stores that can; a [`StoreTree`](super::StoreTree) carries it.

use async_trait::async_trait;

/// A store's bucket that objects can be copied into from the store's
/// buckets, its own included.
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

    /// The largest object [`BucketCopy::copy`] takes.
    fn limit(&self) -> u64;

    /// Copies the object `from_key` of `from_bucket`, of any size, to
    /// `to_key` in this bucket, with its attributes, in parts.
    ///
    /// # Errors
    /// The store's error; `NotFound` when the source object is missing,
    /// `Precondition` when it changed during the copy.
    async fn copy_in_parts(
        &self,
        from_bucket: &str,
        from_key: &str,
        to_key: &str,
    ) -> object_store::Result<PartCopy>;
}

/// The requests a [`BucketCopy::copy_in_parts`] made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartCopy {
    /// Reads (class B): the source's attributes.
    pub reads: u64,
    /// Writes (class A): the upload, its parts and its completion.
    pub writes: u64,
}
