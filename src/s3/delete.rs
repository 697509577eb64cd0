//! DeleteObjects: up to 1000 keys in one request, for prune. A key that no longer exists counts
//! as deleted (S3 says so too), so a batch can be sent again after a lost answer.

use rusty_s3::S3Action;
use rusty_s3::actions::{DeleteObjectsResponse, ObjectIdentifier};

use super::error::{check, net_error};
use std::sync::atomic::Ordering;

use super::{ObjectStore, PRESIGN_FOR, S3Error, Store, retry};

/// S3's limit of keys per DeleteObjects request.
pub const MAX_BATCH: usize = 1000;

impl Store {
    /// Deletes `keys` (at most [`MAX_BATCH`]) in one DeleteObjects request, retried; on a
    /// store that does not implement it, one key per request from then on (said once).
    /// Returns the keys the store refused, with its code.
    pub(super) fn delete_keys(&self, keys: &[String]) -> Result<Vec<(String, String)>, S3Error> {
        if !self.single_deletes.load(Ordering::Relaxed) {
            match retry(4, || self.delete_batch(keys)) {
                Err(e) if e.not_implemented() => {
                    log::warn!(
                        "the store does not take DeleteObjects ({e}): deleting one key per \
                         request from now on"
                    );
                    self.single_deletes.store(true, Ordering::Relaxed);
                }
                done => return done,
            }
        }
        let mut refused = Vec::new();
        for k in keys {
            match self.delete(k) {
                Ok(()) | Err(S3Error::Status { status: 404, .. }) => {}
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => refused.push((k.clone(), e.code().unwrap_or("refused").to_string())),
            }
        }
        Ok(refused)
    }

    /// Deletes `keys` (at most [`MAX_BATCH`]); returns those the store refused, with its code.
    pub(super) fn delete_batch(&self, keys: &[String]) -> Result<Vec<(String, String)>, S3Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let creds = self.credentials.get()?;
        let ids: Vec<ObjectIdentifier> = keys.iter().cloned().map(ObjectIdentifier::new).collect();
        let mut action = self.bucket.delete_objects(Some(&creds), ids.iter());
        // Quiet: the answer names only the keys that could not be deleted.
        action.set_quiet(true);
        let url = action.sign(PRESIGN_FOR);
        let (body, md5) = action.body_with_md5();
        self.sending(3);
        let resp = self
            .agent
            .post(url.as_str())
            .header("content-md5", md5)
            .header("content-type", "application/xml")
            .send(body.as_bytes())
            .map_err(net_error)?;
        let mut resp = check(resp)?;
        let text = resp
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_to_string()
            .map_err(net_error)?;
        let parsed = DeleteObjectsResponse::parse(&text)
            .map_err(|_| S3Error::NotS3("the answer to a batch delete could not be read".into()))?;
        Ok(parsed
            .errors
            .into_iter()
            .filter(|e| e.code != "NoSuchKey")
            .map(|e| (e.key, e.code))
            .collect())
    }
}
