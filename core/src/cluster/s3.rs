//! TODO

/// Blob store on S3.
#[derive(Clone)]
pub struct S3BlobStore;

/// S3 settings.
#[derive(Clone, Debug)]
pub struct S3Config;
