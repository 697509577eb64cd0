//! A fault-injecting HTTP/1.1 proxy (std only) between petrify and the S3 server. Per request, a
//! seeded generator decides: pass, add latency, answer 500 / 503 SlowDown itself, reset the
//! connection mid-request or mid-response, stall, or truncate the response body. It can also be
//! switched to answer every request with a canned response (an HTML page, an ExpiredToken
//! error), or to drop every connection (S3 down).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Latency,
    Error500,
    SlowDown503,
    ResetMidRequest,
    ResetMidResponse,
    Stall,
    Truncate,
}

const FAULTS: [Fault; 7] = [
    Fault::Latency,
    Fault::Error500,
    Fault::SlowDown503,
    Fault::ResetMidRequest,
    Fault::ResetMidResponse,
    Fault::Stall,
    Fault::Truncate,
];

#[derive(Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub faults: AtomicU64,
    pub refused: AtomicU64,
    /// Object PUTs whose body was damaged on the way.
    pub corrupted: AtomicU64,
    /// Requests that carried `x-amz-checksum-crc32`.
    pub with_checksum: AtomicU64,
    /// Ranged GETs.
    pub ranged: AtomicU64,
    /// GETs of objects (not listings).
    pub gets: AtomicU64,
    /// Bytes of request bodies of PUTs (objects and parts sent from petrify).
    pub put_bytes: AtomicU64,
    /// UploadPartCopy requests (parts the store copied itself), and the bytes they copied.
    pub copies: AtomicU64,
    pub copied_bytes: AtomicU64,
    /// Multipart uploads refused because a part other than the last was under 5 MiB.
    pub too_small: AtomicU64,
    /// Writes of objects of the layout (PUTs but parts, and multipart creations), and those of
    /// them that carried `x-amz-object-lock-mode`.
    pub object_writes: AtomicU64,
    pub locked_writes: AtomicU64,
    /// PUTs (parts included) without `x-amz-checksum-crc32`, and multipart completions
    /// without a `<ChecksumCRC32>` for each part.
    pub unchecked: AtomicU64,
    /// Part sizes per multipart upload id, for that check.
    parts: Mutex<std::collections::HashMap<String, std::collections::BTreeMap<u32, u64>>>,
}

/// AWS's smallest part of a multipart upload, but for the last one. s3s-fs does not enforce
/// it; AWS answers `EntityTooSmall` at CompleteMultipartUpload, and so does this proxy.
pub const PART_MIN: u64 = 5 << 20;

/// Whether a multipart upload with these part sizes (by part number) is one AWS completes.
pub fn parts_acceptable(parts: &std::collections::BTreeMap<u32, u64>) -> bool {
    let n = parts.len();
    parts
        .values()
        .take(n.saturating_sub(1))
        .all(|&size| size >= PART_MIN)
}

/// The value of `name` in a request target's query string.
fn query_value(target: &str, name: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .map(str::to_string)
}

/// Whether a request target's query string has `name` (`?delete` or `?delete=`).
fn has_query(target: &str, name: &str) -> bool {
    target.split_once('?').is_some_and(|(_, q)| {
        q.split('&')
            .any(|kv| kv.split('=').next().is_some_and(|k| k.trim() == name))
    })
}

pub struct Config {
    /// Probability, per request, of a fault (each kind equally likely).
    pub fault_rate: Mutex<f64>,
    /// Answer every request with this raw HTTP response instead of forwarding.
    pub canned: Mutex<Option<String>>,
    /// Drop every connection at once (the server is "down").
    pub down: AtomicBool,
    /// Inject faults only into object requests (path under `petrify-v1/`), not listings.
    pub objects_only: AtomicBool,
    /// Answer this many GETs of the writer lease with 404 (a writer that started a moment
    /// later than another, in the window between its read and its write).
    pub hide_lease_gets: AtomicU64,
    /// Drop `If-None-Match` from requests: a store without conditional writes.
    pub strip_if_none_match: AtomicBool,
    /// Flip a byte in the body of this many object PUTs on their way to the store.
    pub corrupt_puts: AtomicU64,
    /// Answer requests carrying `x-amz-checksum-crc32` with a 400 that names it, as a store
    /// that does not take checksums would.
    pub refuse_checksums: AtomicBool,
    /// Answer DeleteObjects (`POST ?delete`) with 501 NotImplemented, as GCS's XML API does.
    pub refuse_batch_delete: AtomicBool,
    /// Answer UploadPartCopy with 501 NotImplemented: a store without multipart copies.
    pub refuse_part_copy: AtomicBool,
    /// Refuse every deletion as AWS does a key without `s3:DeleteObject`: DeleteObject with
    /// 403 AccessDenied, DeleteObjects with 200 and AccessDenied for each key.
    pub refuse_deletes: AtomicBool,
    /// The bucket's region: requests signed for another get AWS's answer naming it.
    pub bucket_region: Mutex<Option<String>>,
    /// Listings leave out keys written through the proxy less than this long ago.
    pub list_lag: Mutex<Option<Duration>>,
    written: super::quirks::Written,
    /// Let this many object PUTs (the lease aside) through, then answer every further one
    /// with 503 SlowDown: a store that refuses the rest of a split upload.
    pub pass_object_puts: AtomicU64,
    /// Probability that the store keeps an upload of a merged object (a PUT, or the POST that
    /// completes its multipart upload) but its answer is lost: forwarded, then the connection
    /// reset.
    pub lose_merged_answers: Mutex<f64>,
    rng: Mutex<u64>,
}

pub struct Proxy {
    pub port: u16,
    pub stats: Arc<Stats>,
    pub config: Arc<Config>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream_port: u16, seed: u64, fault_rate: f64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stats = Arc::new(Stats::default());
        let config = Arc::new(Config {
            fault_rate: Mutex::new(fault_rate),
            canned: Mutex::new(None),
            down: AtomicBool::new(false),
            objects_only: AtomicBool::new(false),
            hide_lease_gets: AtomicU64::new(0),
            strip_if_none_match: AtomicBool::new(false),
            corrupt_puts: AtomicU64::new(0),
            refuse_checksums: AtomicBool::new(false),
            refuse_batch_delete: AtomicBool::new(false),
            refuse_part_copy: AtomicBool::new(false),
            refuse_deletes: AtomicBool::new(false),
            bucket_region: Mutex::new(None),
            list_lag: Mutex::new(None),
            written: Default::default(),
            pass_object_puts: AtomicU64::new(u64::MAX),
            lose_merged_answers: Mutex::new(0.0),
            rng: Mutex::new(seed | 1),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (stats, config, stop) = (stats.clone(), config.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let (stats, config) = (stats.clone(), config.clone());
                            std::thread::spawn(move || {
                                let _ = serve(client, upstream_port, &stats, &config);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Proxy {
            port,
            stats,
            config,
            stop,
            handle: Some(handle),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_fault_rate(&self, r: f64) {
        *self.config.fault_rate.lock().unwrap() = r;
    }

    pub fn set_canned(&self, response: Option<String>) {
        *self.config.canned.lock().unwrap() = response;
    }

    pub fn set_down(&self, down: bool) {
        self.config.down.store(down, Ordering::SeqCst);
    }

    pub fn set_objects_only(&self, v: bool) {
        self.config.objects_only.store(v, Ordering::SeqCst);
    }

    pub fn faults(&self) -> u64 {
        self.stats.faults.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A canned S3 error response.
pub fn s3_error(status: u16, code: &str) -> String {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>\
         <Message>injected by the test proxy</Message></Error>"
    );
    format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

pub fn html_page() -> String {
    let body = "<!DOCTYPE html><html><body><h1>Welcome to nginx!</h1></body></html>";
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A seeded coin that comes up true with probability `p`.
fn chance(config: &Config, p: f64) -> bool {
    if p <= 0.0 {
        return false;
    }
    let mut r = config.rng.lock().unwrap();
    *r ^= *r << 13;
    *r ^= *r >> 7;
    *r ^= *r << 17;
    (*r % 1_000_000) as f64 / 1_000_000.0 < p
}

fn next_fault(config: &Config) -> Option<Fault> {
    let rate = *config.fault_rate.lock().unwrap();
    let mut s = config.rng.lock().unwrap();
    let mut draw = || {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    };
    let roll = (draw() % 1_000_000) as f64 / 1_000_000.0;
    if roll >= rate {
        return None;
    }
    Some(FAULTS[(draw() % FAULTS.len() as u64) as usize])
}

fn serve(
    client: TcpStream,
    upstream_port: u16,
    stats: &Stats,
    config: &Config,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    loop {
        if config.down.load(Ordering::SeqCst) {
            stats.refused.fetch_add(1, Ordering::SeqCst);
            return client.shutdown(Shutdown::Both);
        }
        // Request head.
        let mut head = Vec::new();
        let mut content_length = 0usize;
        let mut is_object = false;
        let mut is_lease_get = false;
        let mut is_put = false;
        let mut has_checksum = false;
        let mut target = String::new();
        let mut copy_range: Option<u64> = None;
        let mut is_copy = false;
        let mut is_post = false;
        let mut is_lease = false;
        let mut is_merged = false;
        let mut has_lock = false;
        loop {
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line)? == 0 {
                return Ok(()); // client closed
            }
            let text = String::from_utf8_lossy(&line).to_ascii_lowercase();
            if let Some(v) = text.strip_prefix("content-length:") {
                content_length = v.trim().parse().unwrap_or(0);
            }
            if head.is_empty() {
                target = String::from_utf8_lossy(&line)
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("")
                    .to_string();
                let path = text.split_whitespace().nth(1).unwrap_or("");
                let path = path.split('?').next().unwrap_or("");
                is_object = path.contains("/petrify-v1/");
                if is_object && text.starts_with("get ") {
                    stats.gets.fetch_add(1, Ordering::SeqCst);
                }
                is_post = text.starts_with("post ");
                // The lease and the marker of a start: the writer's own keys, not objects
                // of the layout.
                is_lease = path.ends_with("/writer.lease") || path.contains("/writer.listed.");
                is_lease_get = text.starts_with("get ") && path.ends_with("/writer.lease");
                is_merged = path.contains(".merged");
                is_put = text.starts_with("put ");
            }
            has_checksum |= text.starts_with("x-amz-checksum-crc32:");
            has_lock |= text.starts_with("x-amz-object-lock-mode:");
            is_copy |= text.starts_with("x-amz-copy-source:");
            if let Some(r) = text.strip_prefix("x-amz-copy-source-range:") {
                let r = r.trim().trim_start_matches("bytes=");
                if let Some((a, b)) = r.split_once('-') {
                    copy_range =
                        Some(b.parse::<u64>().unwrap_or(0) + 1 - a.parse::<u64>().unwrap_or(0));
                }
            }
            if text.starts_with("range:") {
                stats.ranged.fetch_add(1, Ordering::SeqCst);
            }
            if text.starts_with("if-none-match:")
                && config.strip_if_none_match.load(Ordering::SeqCst)
            {
                continue;
            }
            let is_end = line == b"\r\n";
            // Ask the upstream to close after its answer: one request per upstream connection.
            if !text.starts_with("connection:") {
                head.extend_from_slice(&line);
            }
            if is_end {
                break;
            }
        }
        stats.requests.fetch_add(1, Ordering::SeqCst);
        if is_put {
            stats
                .put_bytes
                .fetch_add(content_length as u64, Ordering::SeqCst);
        }
        if is_copy {
            stats.copies.fetch_add(1, Ordering::SeqCst);
        }
        let upload_id = query_value(&target, "uploadId");
        if let (true, Some(id), Some(n)) = (is_put, &upload_id, query_value(&target, "partNumber"))
        {
            let size = copy_range.unwrap_or(content_length as u64);
            if copy_range.is_some() {
                stats.copied_bytes.fetch_add(size, Ordering::SeqCst);
            }
            stats
                .parts
                .lock()
                .unwrap()
                .entry(id.clone())
                .or_default()
                .insert(n.parse().unwrap_or(0), size);
        }
        let region = config.bucket_region.lock().unwrap().clone();
        let signed_for = super::quirks::credential_region(&target);
        if let (Some(region), Some(signed_for)) = (region, signed_for)
            && region != signed_for
        {
            stats.refused.fetch_add(1, Ordering::SeqCst);
            let mut drain = vec![0u8; content_length];
            reader.read_exact(&mut drain)?;
            let is_head = head.starts_with(b"HEAD ");
            let answer = super::quirks::wrong_region(is_head, &signed_for, &region);
            client.write_all(answer.as_bytes())?;
            continue;
        }
        let is_delete = head.starts_with(b"DELETE ");
        let is_batch_delete = is_post && has_query(&target, "delete");
        if (is_delete && upload_id.is_none() || is_batch_delete)
            && config.refuse_deletes.load(Ordering::SeqCst)
        {
            stats.refused.fetch_add(1, Ordering::SeqCst);
            let mut body = vec![0u8; content_length];
            reader.read_exact(&mut body)?;
            let answer = match is_batch_delete {
                true => super::quirks::deletes_denied(&String::from_utf8_lossy(&body)),
                false => s3_error(403, "AccessDenied"),
            };
            client.write_all(answer.as_bytes())?;
            continue;
        }
        if is_copy && config.refuse_part_copy.load(Ordering::SeqCst) {
            stats.refused.fetch_add(1, Ordering::SeqCst);
            let mut drain = vec![0u8; content_length];
            reader.read_exact(&mut drain)?;
            client.write_all(s3_error(501, "NotImplemented").as_bytes())?;
            continue;
        }
        if is_post
            && has_query(&target, "delete")
            && config.refuse_batch_delete.load(Ordering::SeqCst)
        {
            stats.refused.fetch_add(1, Ordering::SeqCst);
            let mut drain = vec![0u8; content_length];
            reader.read_exact(&mut drain)?;
            client.write_all(s3_error(501, "NotImplemented").as_bytes())?;
            continue;
        }
        if let (true, Some(id)) = (is_post, &upload_id) {
            let parts = stats
                .parts
                .lock()
                .unwrap()
                .get(id)
                .cloned()
                .unwrap_or_default();
            if !parts_acceptable(&parts) {
                stats.too_small.fetch_add(1, Ordering::SeqCst);
                let mut drain = vec![0u8; content_length];
                reader.read_exact(&mut drain)?;
                client.write_all(s3_error(400, "EntityTooSmall").as_bytes())?;
                continue;
            }
        }
        if config.down.load(Ordering::SeqCst) {
            stats.refused.fetch_add(1, Ordering::SeqCst);
            return client.shutdown(Shutdown::Both);
        }
        let fault = match config.objects_only.load(Ordering::SeqCst) && !is_object {
            true => None,
            false => next_fault(config),
        };
        if fault.is_some() {
            stats.faults.fetch_add(1, Ordering::SeqCst);
        }
        if fault == Some(Fault::ResetMidRequest) {
            let mut part = vec![0u8; content_length / 2];
            let _ = reader.read_exact(&mut part);
            return client.shutdown(Shutdown::Both);
        }
        let mut body = vec![0u8; content_length];
        reader.read_exact(&mut body)?;
        let data = is_object && !is_lease;
        if data && ((is_put && upload_id.is_none() && !is_copy) || has_query(&target, "uploads")) {
            stats.object_writes.fetch_add(1, Ordering::SeqCst);
            if has_lock {
                stats.locked_writes.fetch_add(1, Ordering::SeqCst);
            }
        }
        let completion = is_post && upload_id.is_some();
        let text = String::from_utf8_lossy(&body);
        if (is_put && !is_copy && !has_checksum)
            || (completion
                && text.matches("<Part>").count() != text.matches("<ChecksumCRC32>").count())
        {
            stats.unchecked.fetch_add(1, Ordering::SeqCst);
        }
        if has_checksum {
            stats.with_checksum.fetch_add(1, Ordering::SeqCst);
            if config.refuse_checksums.load(Ordering::SeqCst) {
                // In words that do not name the header, as some stores answer.
                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InvalidRequest\
                            </Code><Message>unsupported header in request</Message></Error>";
                let resp = format!(
                    "HTTP/1.1 400 Bad Request\r\ncontent-type: application/xml\r\n\
                     content-length: {}\r\n\r\n{body}",
                    body.len()
                );
                client.write_all(resp.as_bytes())?;
                continue;
            }
        }
        if is_put
            && is_object
            && !body.is_empty()
            && config
                .corrupt_puts
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            let i = body.len() / 2;
            body[i] ^= 0x20;
            stats.corrupted.fetch_add(1, Ordering::SeqCst);
        }
        if is_lease_get
            && config
                .hide_lease_gets
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            client.write_all(s3_error(404, "NoSuchKey").as_bytes())?;
            continue;
        }
        if is_put
            && is_object
            && !is_lease
            && upload_id.is_none()
            && config
                .pass_object_puts
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_err()
        {
            stats.refused.fetch_add(1, Ordering::SeqCst);
            client.write_all(s3_error(503, "SlowDown").as_bytes())?;
            continue;
        }
        // A merged object's upload completes with a PUT, or with the POST of its multipart
        // upload (UploadPart PUTs and the POST that starts it carry no object yet).
        let completes = (is_put && upload_id.is_none()) || (is_post && upload_id.is_some());
        let lose_answer =
            is_merged && completes && chance(config, *config.lose_merged_answers.lock().unwrap());
        let canned = config.canned.lock().unwrap().clone();
        if let Some(resp) = canned {
            client.write_all(resp.as_bytes())?;
            continue;
        }
        match fault {
            Some(Fault::Error500) => {
                client.write_all(s3_error(500, "InternalError").as_bytes())?;
                continue;
            }
            Some(Fault::SlowDown503) => {
                client.write_all(s3_error(503, "SlowDown").as_bytes())?;
                continue;
            }
            Some(Fault::Stall) => {
                std::thread::sleep(Duration::from_millis(1500));
                return client.shutdown(Shutdown::Both);
            }
            Some(Fault::Latency) => std::thread::sleep(Duration::from_millis(200)),
            _ => {}
        }
        // Forward.
        let mut up = TcpStream::connect(("127.0.0.1", upstream_port))?;
        let end = head.len() - 2; // before the blank line
        up.write_all(&head[..end])?;
        up.write_all(b"connection: close\r\n\r\n")?;
        up.write_all(&body)?;
        let mut resp = Vec::new();
        up.read_to_end(&mut resp)?;
        if let Some(lag) = *config.list_lag.lock().unwrap() {
            let written =
                (is_put && upload_id.is_none() && !is_copy) || (is_post && upload_id.is_some());
            match super::quirks::path_key(&target) {
                Some(key) if written && super::quirks::succeeded(&resp) => {
                    config.written.record(key)
                }
                None if head.starts_with(b"GET ") && has_query(&target, "list-type") => {
                    resp = super::quirks::hide_keys(&resp, |k| config.written.recent(k, lag));
                }
                _ => {}
            }
        }
        if lose_answer {
            stats.faults.fetch_add(1, Ordering::SeqCst);
            return client.shutdown(Shutdown::Both);
        }
        match fault {
            Some(Fault::ResetMidResponse) => {
                client.write_all(&resp[..resp.len() / 2])?;
                return client.shutdown(Shutdown::Both);
            }
            Some(Fault::Truncate) => {
                let head_end = resp
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map(|p| p + 4)
                    .unwrap_or(resp.len());
                let body_len = resp.len() - head_end;
                client.write_all(&resp[..head_end + body_len / 2])?;
                return client.shutdown(Shutdown::Both);
            }
            _ => {}
        }
        client.write_all(&resp)?;
        // The upstream's response may say keep-alive or nothing; either way the client may send
        // the next request on this connection.
        if resp_closes(&resp) {
            return client.shutdown(Shutdown::Both);
        }
    }
}

fn resp_closes(resp: &[u8]) -> bool {
    let head_end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(resp.len());
    let head = String::from_utf8_lossy(&resp[..head_end]).to_ascii_lowercase();
    head.contains("connection: close")
}
