//! Test support for pqsync: the sample-database generator, an in-process S3
//! server (s3s + s3s-fs) that listens on loopback over real HTTP, and a
//! fault-injecting proxy to put in front of it.
//!
//! Nothing here ships in the `pqsync` binary; the crate is a dev-dependency of
//! the workspace's test suites and the engine of `bench/`.

pub mod damage;
pub mod faults;
pub mod generate;
pub mod s3;
