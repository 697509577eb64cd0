//! Conditional creates (`If-None-Match: *`): the writer lease and the marker of a start. Like
//! every PUT they carry the body's CRC-32 (a bucket with a default Object Lock retention
//! takes nothing without), unless the store refuses the header: then, as for uploads, the
//! next attempt goes without it, and a success proves the header was the trouble.

use std::sync::atomic::Ordering;

use super::checksum::checksum_headers;
use super::error::{check, net_error};
use super::{Checksums, S3Error, Store};

impl Store {
    /// Creates `key` unless it exists. `Ok(false)`: it exists.
    pub(super) fn create(&self, key: &str, bytes: &[u8]) -> Result<bool, S3Error> {
        let on = self.checksums.load(Ordering::Relaxed) == Checksums::On as u8;
        match self.create_once(key, bytes, on) {
            Err(e) if on && !e.is_transient() && matches!(e.status(), Some(400 | 501)) => {
                let without = self.create_once(key, bytes, false);
                if without.is_ok() {
                    self.say_no_checksums(&e);
                    self.checksums
                        .store(Checksums::Off as u8, Ordering::Relaxed);
                }
                without
            }
            r => r,
        }
    }

    fn create_once(&self, key: &str, bytes: &[u8], checksum: bool) -> Result<bool, S3Error> {
        let creds = self.credentials.get()?;
        let action = self.bucket.put_object(Some(&creds), key);
        let mut headers = self.server_side.headers(false);
        if checksum {
            headers.extend(checksum_headers(crc32fast::hash(bytes)));
        }
        self.sending(1);
        let resp = self
            .put_request(action, bytes.len() as u64, &headers)
            .header("if-none-match", "*")
            .send(bytes)
            .map_err(net_error)?;
        match check(resp) {
            Ok(_) => Ok(true),
            Err(S3Error::Status { status: 412, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
