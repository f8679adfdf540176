//! In-process S3 server (being written).
