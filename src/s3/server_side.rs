//! How the store is to be addressed and written to, from the command line: what every write
//! carries besides its bytes (a storage class, server-side encryption), and why a
//! configuration cannot address a bucket.

/// Server-side options sent with every write: `x-amz-storage-class` on the objects of the
/// layout (not on the writer lease, a small object rewritten at each start, which a class
/// with a minimum storage duration would bill for months), and `x-amz-server-side-encryption`
/// (with the KMS key id) on every PUT and multipart upload, as a bucket policy that demands
/// it expects. Reading needs none of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerSide {
    pub storage_class: Option<String>,
    /// `AES256` or `aws:kms`.
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
}

impl ServerSide {
    /// The headers for a write; `data`: an object of the layout (not the lease).
    pub(super) fn headers(&self, data: bool) -> Vec<(&'static str, String)> {
        let mut h = Vec::new();
        if let Some(c) = self.storage_class.as_ref().filter(|_| data) {
            h.push(("x-amz-storage-class", c.clone()));
        }
        if let Some(s) = &self.sse {
            h.push(("x-amz-server-side-encryption", s.clone()));
        }
        if let Some(k) = &self.sse_kms_key_id {
            h.push(("x-amz-server-side-encryption-aws-kms-key-id", k.clone()));
        }
        h
    }
}

/// Why a [`StoreConfig`] cannot address a bucket. The command line turns these into words
/// that name its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The endpoint does not parse as a URL (the parser's words).
    NotAUrl(String),
    UnsupportedScheme,
    MissingHost,
    /// The bucket name cannot be a host name at this endpoint.
    BucketNotAddressable,
    /// The credential source did not give credentials (its words).
    NoCredentials(String),
    /// The CA bundle cannot be used (its words).
    CaBundle(String),
}
