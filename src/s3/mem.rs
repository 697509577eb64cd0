//! An in-memory [`ObjectStore`] for unit tests: followers, planners and leases run against it in
//! milliseconds. It behaves like S3 where petrify depends on it (keys sorted in listings,
//! `If-None-Match: *`, 404 for a missing key) and can be told to fail, to exercise retries.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{Listed, ObjectBody, ObjectStore, Piece, S3Error};

#[derive(Default)]
pub struct MemStore {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
    /// The next this many requests fail with a 503 SlowDown.
    pub fail_next: AtomicU32,
    /// Requests answered, failures included.
    pub requests: AtomicU32,
    /// Refuse every deletion with 403 AccessDenied (a store without delete permission).
    pub refuse_deletes: std::sync::atomic::AtomicBool,
    /// The next this many GETs answer 200 with an empty body (a store or proxy misbehaving).
    pub empty_answers: AtomicU32,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// Every key and its bytes.
    pub fn objects(&self) -> BTreeMap<String, Vec<u8>> {
        self.objects.lock().map(|o| o.clone()).unwrap_or_default()
    }

    fn request(&self) -> Result<(), S3Error> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let failing = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match failing {
            Ok(_) => Err(S3Error::Status {
                status: 503,
                code: Some("SlowDown".into()),
                message: None,
                skew_s: None,
                region: None,
            }),
            Err(_) => Ok(()),
        }
    }

    /// A 200 answer with no body, while [`MemStore::empty_answers`] lasts.
    fn empty_answer(&self) -> Option<ObjectBody> {
        self.empty_answers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .ok()
            .map(|_| ObjectBody {
                len: Some(0),
                reader: Box::new(std::io::empty()),
            })
    }

    fn not_found() -> S3Error {
        S3Error::Status {
            status: 404,
            code: Some("NoSuchKey".into()),
            message: None,
            skew_s: None,
            region: None,
        }
    }
}

impl ObjectStore for MemStore {
    fn list(&self, prefix: &str) -> Result<Vec<Listed>, S3Error> {
        self.request()?;
        let o = self.objects.lock().map_err(|_| Self::not_found())?;
        Ok(o.range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| Listed {
                key: k.clone(),
                size: v.len() as u64,
            })
            .collect())
    }

    fn delete_many(&self, keys: &[String]) -> Result<Vec<(String, String)>, S3Error> {
        self.request()?;
        if self.refuse_deletes.load(Ordering::SeqCst) {
            return Ok(keys
                .iter()
                .map(|k| (k.clone(), "AccessDenied".into()))
                .collect());
        }
        if let Ok(mut o) = self.objects.lock() {
            for k in keys {
                o.remove(k);
            }
        }
        Ok(Vec::new())
    }

    fn list_folders(&self, prefix: &str) -> Result<Vec<String>, S3Error> {
        let mut out: Vec<String> = self
            .list(prefix)?
            .into_iter()
            .filter_map(|l| {
                let rest = l.key.strip_prefix(prefix)?;
                let cut = rest.find('/')?;
                Some(format!("{prefix}{}", &rest[..=cut]))
            })
            .collect();
        out.dedup();
        Ok(out)
    }

    fn put(
        &self,
        key: &str,
        body: &mut dyn Read,
        len: u64,
        crc32: Option<u32>,
    ) -> Result<(), S3Error> {
        self.request()?;
        let mut buf = Vec::new();
        body.take(len)
            .read_to_end(&mut buf)
            .map_err(|e| S3Error::Network(format!("reading the body: {e}")))?;
        if buf.len() as u64 != len {
            return Err(S3Error::Network("the body ended early".into()));
        }
        if crc32.is_some_and(|c| c != crc32fast::hash(&buf)) {
            return Err(S3Error::Status {
                status: 400,
                code: Some("BadDigest".into()),
                message: None,
                skew_s: None,
                region: None,
            });
        }
        if let Ok(mut o) = self.objects.lock() {
            o.insert(key.to_string(), buf);
        }
        Ok(())
    }

    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool, S3Error> {
        self.request()?;
        let mut o = self.objects.lock().map_err(|_| Self::not_found())?;
        if o.contains_key(key) {
            return Ok(false);
        }
        o.insert(key.to_string(), bytes.to_vec());
        Ok(true)
    }

    fn get(&self, key: &str) -> Result<ObjectBody, S3Error> {
        self.request()?;
        if let Some(empty) = self.empty_answer() {
            return Ok(empty);
        }
        let o = self.objects.lock().map_err(|_| Self::not_found())?;
        let bytes = o.get(key).cloned().ok_or_else(Self::not_found)?;
        Ok(ObjectBody {
            len: Some(bytes.len() as u64),
            reader: Box::new(std::io::Cursor::new(bytes)),
        })
    }

    fn get_range(&self, key: &str, start: u64, end: u64) -> Result<ObjectBody, S3Error> {
        // As the real store: no bytes, no request.
        if end == start {
            return Ok(ObjectBody {
                len: Some(0),
                reader: Box::new(std::io::empty()),
            });
        }
        self.request()?;
        if let Some(empty) = self.empty_answer() {
            return Ok(empty);
        }
        let o = self.objects.lock().map_err(|_| Self::not_found())?;
        let bytes = o.get(key).ok_or_else(Self::not_found)?;
        let end = (end as usize).min(bytes.len());
        let part = bytes.get(start as usize..end).unwrap_or_default().to_vec();
        Ok(ObjectBody {
            len: Some(part.len() as u64),
            reader: Box::new(std::io::Cursor::new(part)),
        })
    }

    fn delete(&self, key: &str) -> Result<(), S3Error> {
        self.request()?;
        if let Ok(mut o) = self.objects.lock() {
            o.remove(key);
        }
        Ok(())
    }

    /// Like AWS: a piece but the last under 5 MiB is refused (`EntityTooSmall`).
    fn compose(&self, key: &str, pieces: Vec<Piece<'_>>) -> Result<(), S3Error> {
        self.request()?;
        let n = pieces.len();
        let mut out = Vec::new();
        for (i, piece) in pieces.into_iter().enumerate() {
            let before = out.len();
            match piece {
                Piece::Copy { key, from, to, .. } => {
                    let o = self.objects.lock().map_err(|_| Self::not_found())?;
                    let src = o.get(&key).ok_or_else(Self::not_found)?;
                    let bytes =
                        src.get(from as usize..to as usize)
                            .ok_or_else(|| S3Error::Status {
                                status: 416,
                                code: Some("InvalidRange".into()),
                                message: None,
                                skew_s: None,
                                region: None,
                            })?;
                    out.extend_from_slice(bytes);
                }
                Piece::Send { body, len, .. } => {
                    body.take(len)
                        .read_to_end(&mut out)
                        .map_err(|e| S3Error::Network(format!("reading the body: {e}")))?;
                    if (out.len() - before) as u64 != len {
                        return Err(S3Error::Network("the body ended early".into()));
                    }
                }
            }
            if i + 1 < n && out.len() - before < crate::compaction::PART_MIN as usize {
                return Err(S3Error::Status {
                    status: 400,
                    code: Some("EntityTooSmall".into()),
                    message: None,
                    skew_s: None,
                    region: None,
                });
            }
        }
        if let Ok(mut o) = self.objects.lock() {
            o.insert(key.to_string(), out);
        }
        Ok(())
    }
}
