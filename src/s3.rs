//! The replica's edge: the only module that speaks HTTP or presigns. [`ObjectStore`] is the
//! seam the rest of petrify talks to: a few plain operations (list a prefix, put a byte range,
//! get an object, delete one), every failure classified so that callers can decide between
//! retrying and stopping. [`Store`] is the real one; `mem::MemStore` (tests only) keeps objects
//! in memory. No URL, signature or secret ever leaves this module: errors carry the operation,
//! the key, the HTTP status and S3's error code, nothing else.

use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

mod checksum;
mod create;
mod credentials;
mod delete;
mod error;
mod listing;
#[cfg(test)]
pub mod mem;
mod multipart;
mod ping;
pub mod probe;
mod resolve;
mod retry;
mod server_side;
mod tls;
mod versions;

pub use checksum::crc32_base64;
use checksum::{CHECKSUM_HEADER, checksum_headers, refuses_checksums};
pub use credentials::Source as CredentialSource;
pub use delete::MAX_BATCH;
pub use error::S3Error;
use error::{check, net_error};
pub use listing::{Listed, parse_folder_page, parse_listing_page};
pub use multipart::Piece;
pub use ping::Pinger;
pub use retry::{Backoff, retry};
pub use server_side::{ConfigError, Lock, ServerSide};
pub use versions::AsOf;

use rusty_s3::actions::S3Action;
use rusty_s3::{Bucket, UrlStyle};

/// How long a presigned request stays valid. It is signed just before it is sent, and again for
/// every retry, so this only needs to cover one request; an hour covers a multi-GB delta.
const PRESIGN_FOR: Duration = Duration::from_secs(3600);

/// The kinds of request [`ObjectStore::requests_sent`] counts.
pub const REQUEST_KINDS: [&str; 4] = ["list", "put", "get", "delete"];

/// Connections kept open for reuse: as many as recover can have in flight (`--parallel` is
/// at most 256).
const MAX_CONNECTIONS: usize = 256;

/// Where and as whom to talk to S3. (Credentials' Debug shows the key id, never the secret.)
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// `None`: path-style for IP addresses and localhost, virtual-host style otherwise.
    pub path_style: Option<bool>,
    pub credentials: CredentialSource,
    /// A private CA's certificates, trusted besides the built-in roots.
    pub ca_bundle: Option<std::path::PathBuf>,
    /// What every object written carries for the store (`--storage-class`, `--sse`).
    pub server_side: ServerSide,
}

/// The object store, as persist, recover and list use it. One attempt per call unless said
/// otherwise: callers retry, so that a retried upload can carry newly appended bytes.
pub trait ObjectStore: Sync {
    /// Every key under `prefix`, all pages (each page retried a few times).
    fn list(&self, prefix: &str) -> Result<Vec<Listed>, S3Error>;
    /// The folders right below `prefix` (keys up to the next `/`, each ending in `/`), all pages:
    /// one short listing instead of every key, for a reader that needs only some folders.
    fn list_folders(&self, prefix: &str) -> Result<Vec<String>, S3Error>;
    /// Uploads exactly `len` bytes from `body` to `key`. With `crc32`, the bytes' CRC-32 goes
    /// along (`x-amz-checksum-crc32`): the store refuses bytes damaged on the way (BadDigest)
    /// instead of keeping them.
    fn put(
        &self,
        key: &str,
        body: &mut dyn Read,
        len: u64,
        crc32: Option<u32>,
    ) -> Result<(), S3Error>;
    /// Uploads a small object unless `key` exists. `Ok(false)`: it exists. Stores that ignore
    /// the condition overwrite; callers check by reading back.
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool, S3Error>;
    /// Starts downloading `key`.
    fn get(&self, key: &str) -> Result<ObjectBody, S3Error>;
    /// Starts downloading bytes `[start, end)` of `key`. The body's `len` is what the store
    /// says it sends; callers check it is the range's. An empty range is no bytes, without a
    /// request.
    fn get_range(&self, key: &str, start: u64, end: u64) -> Result<ObjectBody, S3Error>;
    /// Starts downloading `key` from byte `start` to its end (a merged object's index, whose
    /// length only the store knows).
    fn get_from(&self, key: &str, start: u64) -> Result<ObjectBody, S3Error> {
        self.get_range(key, start, u64::MAX)
    }
    /// Puts `key` together from `pieces` in the store (a multipart upload; copied pieces never
    /// cross the network). Every piece but the last must be at least 5 MiB
    /// ([`crate::compaction::PART_MIN`]): AWS refuses a shorter one. One attempt.
    fn compose(&self, key: &str, pieces: Vec<Piece<'_>>) -> Result<(), S3Error> {
        let _ = pieces;
        Err(S3Error::NotS3(format!(
            "this store cannot put {key} together"
        )))
    }
    /// Whether [`Self::compose`] may copy pieces: `false` once the store refused UploadPartCopy
    /// as a request it does not implement (merged objects are then sent whole).
    fn copies_parts(&self) -> bool {
        true
    }
    fn delete(&self, key: &str) -> Result<(), S3Error>;
    /// Deletes up to [`MAX_BATCH`] keys in one request; returns those the store refused, with
    /// its error code. A key that does not exist counts as deleted.
    fn delete_many(&self, keys: &[String]) -> Result<Vec<(String, String)>, S3Error>;
    /// Requests sent so far, by [`REQUEST_KINDS`] (for metrics; stores that do not count say 0).
    fn requests_sent(&self) -> [u64; 4] {
        [0; 4]
    }

    /// A small object's bytes (at most 1 MiB are read), or `None` if there is no such key (no
    /// such bucket is an error: some stores would create it at the first PUT).
    fn get_small(&self, key: &str) -> Result<Option<Vec<u8>>, S3Error> {
        let mut body = match self.get(key) {
            Ok(b) => b,
            Err(e) if e.code() == Some("NoSuchBucket") => return Err(e),
            Err(S3Error::Status { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut buf = Vec::new();
        body.reader
            .by_ref()
            .take(1 << 20)
            .read_to_end(&mut buf)
            .map_err(|e| S3Error::Network(format!("reading {key}: {e}")))?;
        Ok(Some(buf))
    }
}

/// The real store: S3 over HTTP, every request presigned just before it is sent.
pub struct Store {
    /// Requests sent, by [`REQUEST_KINDS`], for persist's metrics.
    sent: [std::sync::atomic::AtomicU64; 4],
    agent: ureq::Agent,
    bucket: Bucket,
    credentials: credentials::Provider,
    /// Whether PUTs carry `x-amz-checksum-crc32` (see [`Checksums`]).
    checksums: AtomicU8,
    /// The refusal that set [`Checksums::Probing`], for the WARN if it was the header's.
    refusal: Mutex<Option<String>>,
    server_side: ServerSide,
    /// The store refused DeleteObjects as a request it does not implement: keys go one by one.
    single_deletes: AtomicBool,
    /// The store refused UploadPartCopy as a request it does not implement.
    no_part_copy: AtomicBool,
}

/// The checksum header's state: sent; left out for one attempt after a refusal that might be
/// the header's (a success without it proves it was); or left out for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Checksums {
    On = 0,
    Probing = 1,
    Off = 2,
}

/// An object being downloaded: its length as announced, and its bytes.
pub struct ObjectBody {
    pub len: Option<u64>,
    pub reader: Box<dyn Read + Send>,
}

impl Store {
    pub fn new(cfg: &StoreConfig) -> Result<Store, ConfigError> {
        let endpoint =
            url::Url::parse(&cfg.endpoint).map_err(|e| ConfigError::NotAUrl(e.to_string()))?;
        let host = endpoint.host_str().unwrap_or_default().to_string();
        let path_style = cfg.path_style.unwrap_or_else(|| {
            host == "localhost"
                || host.ends_with(".localhost")
                || host.parse::<std::net::IpAddr>().is_ok()
                || host.starts_with('[')
        });
        let style = if path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket =
            Bucket::new(endpoint, style, cfg.bucket.clone(), cfg.region.clone()).map_err(|e| {
                match e {
                    rusty_s3::BucketError::UnsupportedScheme => ConfigError::UnsupportedScheme,
                    rusty_s3::BucketError::MissingHost => ConfigError::MissingHost,
                    rusty_s3::BucketError::ParseError(_) => ConfigError::BucketNotAddressable,
                }
            })?;
        let tls = tls::config(cfg.ca_bundle.as_deref()).map_err(ConfigError::CaBundle)?;
        let config = ureq::Agent::config_builder()
            .tls_config(tls.clone())
            // Read S3's error bodies ourselves.
            .http_status_as_error(false)
            // A redirect means a wrong region; following it would turn a PUT into a GET.
            .max_redirects(0)
            .max_redirects_will_error(false)
            // Every timeout is off by default in ureq: a stalled peer must not hang persist.
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_resolve(Some(Duration::from_secs(10)))
            .timeout_per_read(Some(Duration::from_secs(30)))
            .timeout_per_write(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .user_agent(concat!("petrify/", env!("CARGO_PKG_VERSION")))
            // ureq keeps 3 idle connections per host: recover's parallel workers would then
            // open a new connection for most requests (bench/NOTEBOOK.md, "Tuning recover").
            .max_idle_connections(MAX_CONNECTIONS)
            .max_idle_connections_per_host(MAX_CONNECTIONS)
            .build();
        Ok(Store {
            sent: Default::default(),
            agent: ureq::Agent::with_parts(
                config,
                ureq::unversioned::transport::DefaultConnector::new(),
                resolve::KeptResolver::default(),
            ),
            bucket,
            credentials: {
                let p = credentials::Provider::new(cfg.credentials.clone(), tls)
                    .map_err(ConfigError::NoCredentials)?;
                let from = p.source().describe();
                match p.source() {
                    CredentialSource::Static { .. } => log::debug!("credentials from {from}"),
                    _ => log::info!("credentials from {from}"),
                }
                p
            },
            checksums: AtomicU8::new(Checksums::On as u8),
            refusal: Mutex::new(None),
            server_side: cfg.server_side.clone(),
            single_deletes: AtomicBool::new(false),
            no_part_copy: AtomicBool::new(false),
        })
    }

    /// A PUT of `len` bytes carrying `headers`, each signed into the presigned URL (rusty-s3
    /// signs what is in `headers_mut()`, as S3 requires of every `x-amz-` header) and sent.
    fn put_request<'a>(
        &self,
        mut action: impl S3Action<'a>,
        len: u64,
        headers: &[(&'static str, String)],
    ) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        for (k, v) in headers {
            action.headers_mut().insert(*k, v.clone());
        }
        let url = action.sign(PRESIGN_FOR);
        let mut request = self
            .agent
            .put(url.as_str())
            .header("content-length", len.to_string());
        for (k, v) in headers {
            request = request.header(*k, v);
        }
        request
    }

    /// Counts one request of kind `i` (an index into [`REQUEST_KINDS`]).
    fn sending(&self, i: usize) {
        self.sent[i].fetch_add(1, Ordering::Relaxed);
    }

    /// A GET of the whole object or of `[start, end)` of it (`Range` may go unsigned); of one
    /// version of it, with `version`.
    fn get_object(
        &self,
        key: &str,
        version: Option<&str>,
        range: Option<(u64, u64)>,
    ) -> Result<ObjectBody, S3Error> {
        // No bytes (an empty file's point inside a merged object): HTTP has no empty range,
        // and `bytes=N-N` would bring one byte. Nothing to ask the store for.
        if let Some((start, end)) = range
            && end == start
        {
            return Ok(ObjectBody {
                len: Some(0),
                reader: Box::new(std::io::empty()),
            });
        }
        self.sending(2);
        let creds = self.credentials.get()?;
        let mut action = self.bucket.get_object(Some(&creds), key);
        if let Some(v) = version {
            action.query_mut().insert("versionId", v);
        }
        let url = action.sign(PRESIGN_FOR);
        let mut request = self.agent.get(url.as_str());
        if let Some((start, end)) = range {
            // `u64::MAX`: to the end of the object.
            let last = match end {
                u64::MAX => String::new(),
                end => end.saturating_sub(1).to_string(),
            };
            request = request.header("range", format!("bytes={start}-{last}"));
        }
        let resp = request.call().map_err(net_error)?;
        let resp = check(resp)?;
        if range.is_some() && resp.status().as_u16() != 206 {
            // The whole object instead of the range: never to be written at the range's place.
            return Err(S3Error::NotS3(format!(
                "asked for a range of {key}, got HTTP {}",
                resp.status().as_u16()
            )));
        }
        let len = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok(ObjectBody {
            len,
            reader: Box::new(resp.into_body().into_reader()),
        })
    }

    /// Said once, when the checksum header is left out for good.
    fn say_no_checksums(&self, why: &dyn std::fmt::Display) {
        log::warn!(
            "the store refuses {CHECKSUM_HEADER} ({why}): uploading without it; damage in \
             transit is then found at recovery, by the CRC-32 in each object's key"
        );
    }
}

impl ObjectStore for Store {
    fn list(&self, prefix: &str) -> Result<Vec<Listed>, S3Error> {
        self.all_pages(prefix, false, parse_listing_page)
    }

    fn list_folders(&self, prefix: &str) -> Result<Vec<String>, S3Error> {
        self.all_pages(prefix, true, parse_folder_page)
    }

    /// Uploads exactly `len` bytes from `body` to `key` with a `Content-Length`. One attempt: the
    /// caller re-reads its source and retries, so that a retry can carry newly appended bytes.
    fn put(
        &self,
        key: &str,
        body: &mut dyn Read,
        len: u64,
        crc32: Option<u32>,
    ) -> Result<(), S3Error> {
        let creds = self.credentials.get()?;
        let action = self.bucket.put_object(Some(&creds), key);
        let state = match self.checksums.load(Ordering::Relaxed) {
            0 => Checksums::On,
            1 => Checksums::Probing,
            _ => Checksums::Off,
        };
        let checksum = crc32.filter(|_| state == Checksums::On);
        let mut headers = self.server_side.headers(true);
        headers.extend(checksum.into_iter().flat_map(checksum_headers));
        self.sending(1);
        let resp = self
            .put_request(action, len, &headers)
            .send(ureq::SendBody::from_reader(body))
            .map_err(net_error)?;
        let result = check(resp).map(drop);
        let next = match (&result, checksum.is_some()) {
            (Err(e), true) if e.code() == Some("BadDigest") => {
                // Refused as damaged in transit. Some stores (s3s-fs) keep the refused bytes
                // anyway: remove them. Safe, as petrify's keys are each one attempt's (they
                // carry the time of observation); best effort, as a damaged object left behind
                // only fails its own point's recovery, loudly.
                if let Err(d) = self.delete(key) {
                    log::warn!("could not remove {key} after a damaged upload: {d}");
                }
                state
            }
            (Err(e), true) if refuses_checksums(e) => {
                self.say_no_checksums(e);
                Checksums::Off
            }
            // A refusal that may be the header's: the next attempt goes without it.
            (Err(e), true) if !e.is_transient() && matches!(e.status(), Some(400 | 501)) => {
                *self.refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                Checksums::Probing
            }
            // Only an upload that would have carried the header tells anything about it.
            (Ok(()), false) if state == Checksums::Probing && crc32.is_some() => {
                let why = self
                    .refusal
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                self.say_no_checksums(&why.unwrap_or_default());
                Checksums::Off
            }
            // Refused without the header too: the header was not the problem.
            (Err(e), false)
                if state == Checksums::Probing && crc32.is_some() && !e.is_transient() =>
            {
                Checksums::On
            }
            _ => state,
        };
        self.checksums.store(next as u8, Ordering::Relaxed);
        result
    }

    /// `If-None-Match: *`; a 412 means the key exists (see `s3/create.rs`).
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool, S3Error> {
        self.create(key, bytes)
    }

    fn delete(&self, key: &str) -> Result<(), S3Error> {
        let creds = self.credentials.get()?;
        let action = self.bucket.delete_object(Some(&creds), key);
        let url = action.sign(PRESIGN_FOR);
        self.sending(3);
        let resp = self.agent.delete(url.as_str()).call().map_err(net_error)?;
        check(resp).map(drop)
    }

    fn delete_many(&self, keys: &[String]) -> Result<Vec<(String, String)>, S3Error> {
        self.delete_keys(keys)
    }

    fn requests_sent(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.sent[i].load(Ordering::Relaxed))
    }

    fn get(&self, key: &str) -> Result<ObjectBody, S3Error> {
        self.get_object(key, None, None)
    }

    fn get_range(&self, key: &str, start: u64, end: u64) -> Result<ObjectBody, S3Error> {
        self.get_object(key, None, Some((start, end)))
    }

    fn compose(&self, key: &str, pieces: Vec<Piece<'_>>) -> Result<(), S3Error> {
        self.compose_object(key, pieces)
    }

    fn copies_parts(&self) -> bool {
        !self.no_part_copy.load(Ordering::Relaxed)
    }
}
