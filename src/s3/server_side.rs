//! How the store is to be addressed and written to, from the command line: what every write
//! carries besides its bytes (a storage class, server-side encryption), and why a
//! configuration cannot address a bucket.

/// Server-side options sent with every write: `x-amz-storage-class` and Object Lock retention
/// on the objects of the layout (not on the writer lease, a small object rewritten at each
/// start, which a class with a minimum storage duration would bill for months, and which a
/// lock would keep for days), and `x-amz-server-side-encryption` (with the KMS key id) on
/// every PUT and multipart upload, as a bucket policy that demands it expects. Reading needs
/// none of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerSide {
    pub storage_class: Option<String>,
    /// `AES256` or `aws:kms`.
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
    /// Object Lock retention for the objects of the layout (`--lock-days`).
    pub lock: Option<Lock>,
}

/// S3 Object Lock retention: a mode, until so many days after each upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lock {
    pub compliance: bool,
    pub days: u32,
}

impl Lock {
    /// The headers for an upload made at `now_ms`.
    fn headers(&self, now_ms: u64) -> [(&'static str, String); 2] {
        let until = now_ms + u64::from(self.days) * 86_400_000;
        let mode = match self.compliance {
            true => "COMPLIANCE",
            false => "GOVERNANCE",
        };
        [
            ("x-amz-object-lock-mode", mode.to_string()),
            (
                "x-amz-object-lock-retain-until-date",
                crate::timestamp::rfc3339_ms(until),
            ),
        ]
    }
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
        if let Some(l) = self.lock.filter(|_| data) {
            h.extend(l.headers(crate::timestamp::now_ms()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_runs_so_many_days_from_each_upload_on_data_only() {
        let lock = Lock {
            compliance: false,
            days: 7,
        };
        let h = lock.headers(1_764_104_645_123);
        assert_eq!(h[0].1, "GOVERNANCE");
        assert_eq!(h[1].1, "2025-12-02T21:04:05.123Z");
        let s = ServerSide {
            lock: Some(lock),
            ..ServerSide::default()
        };
        assert_eq!(s.headers(true).len(), 2);
        assert!(s.headers(false).is_empty());
    }
}
