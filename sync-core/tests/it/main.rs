//! Engine behaviour tests, written once and run against every kind of remote
//! tree: a local directory, the in-memory store, and S3 over real HTTP.

mod conformance;
mod faults;
mod repo;
mod support;
