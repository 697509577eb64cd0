//! The replica's edge: the only module that speaks HTTP or presigns. It offers a few plain
//! operations (list a prefix, put a byte range, get an object, delete one) and classifies every
//! failure so that callers can decide between retrying and stopping. No URL, signature or secret
//! ever leaves this module: errors carry the operation, the key, the HTTP status and S3's error
//! code, nothing else.

use std::fmt;
use std::io::{self, Read};
use std::time::{Duration, Instant};

use rusty_s3::actions::{ListObjectsV2, S3Action};
use rusty_s3::{Bucket, Credentials, UrlStyle};

/// A difference between our clock and the server's worth naming in an error: S3 refuses
/// requests signed more than 15 minutes away from its own time.
const SKEW_WORTH_SAYING_S: i64 = 300;

/// How long a presigned request stays valid. It is signed just before it is sent, and again for
/// every retry, so this only needs to cover one request; an hour covers a multi-GB delta.
const PRESIGN_FOR: Duration = Duration::from_secs(3600);

/// Where and as whom to talk to S3. (Credentials' Debug shows the key id, never the secret.)
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// `None`: path-style for IP addresses and localhost, virtual-host style otherwise.
    pub path_style: Option<bool>,
    pub credentials: Credentials,
}

pub struct Store {
    agent: ureq::Agent,
    bucket: Bucket,
    credentials: Credentials,
}

/// What went wrong with a request, in words safe for a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Error {
    /// No HTTP answer: connection refused or reset, DNS, timeout, TLS.
    Network(String),
    /// S3 answered with an error status.
    Status {
        status: u16,
        code: Option<String>,
        message: Option<String>,
        /// The server's clock minus ours, in seconds, when its `Date` header differs by more
        /// than [`SKEW_WORTH_SAYING_S`]: requests are signed with our clock, so a skewed one is
        /// refused, often in words that blame the credentials.
        skew_s: Option<i64>,
    },
    /// Something answered, but not like S3 does (HTML, garbage XML, wrong length).
    NotS3(String),
}

impl S3Error {
    /// Worth another attempt: the network, throttling and server-side errors.
    pub fn is_transient(&self) -> bool {
        match self {
            S3Error::Network(_) => true,
            S3Error::Status { status, code, .. } => {
                *status >= 500
                    || *status == 429
                    || matches!(
                        code.as_deref(),
                        Some("SlowDown" | "RequestTimeout" | "InternalError")
                    )
            }
            S3Error::NotS3(_) => false,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            S3Error::Status { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            S3Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl fmt::Display for S3Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            S3Error::Network(m) => write!(f, "cannot reach S3: {m}"),
            S3Error::Status {
                status,
                code,
                message,
                skew_s,
            } => {
                write!(f, "S3 answered {status}")?;
                if let Some(c) = code {
                    write!(f, " {c}")?;
                }
                if let Some(m) = message {
                    write!(f, " ({m})")?;
                }
                let skewed = code.as_deref() == Some("RequestTimeTooSkewed")
                    || (*status == 403 && skew_s.is_some());
                if skewed {
                    return match skew_s {
                        Some(s) => write!(
                            f,
                            ": this host's clock is {}s {} the server's; requests are signed \
                             with it: set the clock right (NTP)",
                            s.abs(),
                            if *s > 0 { "behind" } else { "ahead of" }
                        ),
                        None => write!(
                            f,
                            ": this host's clock differs from the server's; requests are \
                             signed with it: set the clock right (NTP)"
                        ),
                    };
                }
                let hint = match (status, code.as_deref()) {
                    (_, Some("NoSuchBucket")) => "check --bucket, or create the bucket",
                    (_, Some("InvalidAccessKeyId" | "SignatureDoesNotMatch")) => {
                        "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                    }
                    (_, Some("ExpiredToken" | "TokenRefreshRequired")) => {
                        "the session token has expired: renew AWS_SESSION_TOKEN"
                    }
                    (301 | 307, _)
                    | (_, Some("PermanentRedirect" | "AuthorizationHeaderMalformed")) => {
                        "the bucket is in another region: check --region and --endpoint"
                    }
                    (403, _) => "check the credentials and the bucket's policy",
                    _ => "",
                };
                if !hint.is_empty() {
                    write!(f, ": {hint}")?;
                }
                Ok(())
            }
            S3Error::NotS3(m) => write!(f, "the endpoint does not answer like S3: {m}"),
        }
    }
}

/// An object being downloaded: its length as announced, and its bytes.
pub struct ObjectBody {
    pub len: Option<u64>,
    pub reader: Box<dyn Read + Send>,
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
}

impl Store {
    pub fn new(cfg: &StoreConfig) -> Result<Store, String> {
        let endpoint = url::Url::parse(&cfg.endpoint)
            .map_err(|e| format!("--endpoint {:?} is not a URL ({e})", cfg.endpoint))?;
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
                    rusty_s3::BucketError::UnsupportedScheme => {
                        "--endpoint must start with https:// or http://".to_string()
                    }
                    rusty_s3::BucketError::MissingHost => "--endpoint has no host".to_string(),
                    rusty_s3::BucketError::ParseError(_) => format!(
                        "bucket {:?} cannot be addressed at this endpoint (try --path-style)",
                        cfg.bucket
                    ),
                }
            })?;
        let config = ureq::Agent::config_builder()
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
            .build();
        Ok(Store {
            agent: ureq::Agent::new_with_config(config),
            bucket,
            credentials: cfg.credentials.clone(),
        })
    }

    /// Every key under `prefix`, all pages. One attempt per page; see [`retry`].
    pub fn list(&self, prefix: &str) -> Result<Vec<Listed>, S3Error> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = retry(4, || self.list_page(prefix, token.as_deref()))?;
            out.extend(page.0);
            match page.1 {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    fn list_page(
        &self,
        prefix: &str,
        token: Option<&str>,
    ) -> Result<(Vec<Listed>, Option<String>), S3Error> {
        let mut action = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
        action.with_prefix(prefix);
        if let Some(t) = token {
            action.with_continuation_token(t);
        }
        let url = action.sign(PRESIGN_FOR);
        let resp = self.agent.get(url.as_str()).call().map_err(net_error)?;
        let mut resp = check(resp)?;
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(net_error)?;
        parse_listing_page(&body)
    }

    /// Uploads exactly `len` bytes from `body` to `key` with a `Content-Length`. One attempt: the
    /// caller re-reads its source and retries, so that a retry can carry newly appended bytes.
    pub fn put(&self, key: &str, body: &mut dyn Read, len: u64) -> Result<(), S3Error> {
        let action = self.bucket.put_object(Some(&self.credentials), key);
        let url = action.sign(PRESIGN_FOR);
        let resp = self
            .agent
            .put(url.as_str())
            .header("content-length", len.to_string())
            .send(ureq::SendBody::from_reader(body))
            .map_err(net_error)?;
        check(resp).map(drop)
    }

    /// Uploads a small object unless `key` exists (`If-None-Match: *`). `Ok(false)`: it exists
    /// (412). Stores that ignore the header overwrite; callers check by reading back.
    pub fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool, S3Error> {
        let action = self.bucket.put_object(Some(&self.credentials), key);
        let url = action.sign(PRESIGN_FOR);
        let resp = self
            .agent
            .put(url.as_str())
            .header("content-length", bytes.len().to_string())
            .header("if-none-match", "*")
            .send(bytes)
            .map_err(net_error)?;
        match check(resp) {
            Ok(_) => Ok(true),
            Err(S3Error::Status { status: 412, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A small object's bytes, or `None` if there is no such key.
    pub fn get_small(&self, key: &str) -> Result<Option<Vec<u8>>, S3Error> {
        let mut body = match self.get(key) {
            Ok(b) => b,
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

    pub fn delete(&self, key: &str) -> Result<(), S3Error> {
        let action = self.bucket.delete_object(Some(&self.credentials), key);
        let url = action.sign(PRESIGN_FOR);
        let resp = self.agent.delete(url.as_str()).call().map_err(net_error)?;
        check(resp).map(drop)
    }

    /// Starts downloading `key`. One attempt; see [`retry`].
    pub fn get(&self, key: &str) -> Result<ObjectBody, S3Error> {
        let action = self.bucket.get_object(Some(&self.credentials), key);
        let url = action.sign(PRESIGN_FOR);
        let resp = self.agent.get(url.as_str()).call().map_err(net_error)?;
        let resp = check(resp)?;
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
}

/// One page of a ListObjectsV2 answer: its keys and the token for the next page. Pure; it reads
/// outside data, so it is fuzzed (src/props.rs).
pub fn parse_listing_page(body: &str) -> Result<(Vec<Listed>, Option<String>), S3Error> {
    let parsed = ListObjectsV2::parse_response(body).map_err(|_| {
        S3Error::NotS3(if body.to_ascii_lowercase().contains("<html") {
            "got an HTML page where a bucket listing was expected".into()
        } else {
            "the bucket listing could not be read".into()
        })
    })?;
    let items = parsed
        .contents
        .into_iter()
        .map(|c| Listed {
            key: c.key,
            size: c.size.unwrap_or(0),
        })
        .collect();
    Ok((items, parsed.next_continuation_token))
}

/// Turns a non-2xx answer into an [`S3Error`], reading S3's `<Code>` and `<Message>`. Nothing else
/// of the body is kept: S3 echoes the canonical request, which holds the session token.
fn check(
    mut resp: ureq::http::Response<ureq::Body>,
) -> Result<ureq::http::Response<ureq::Body>, S3Error> {
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(resp);
    }
    let now_s = (crate::timestamp::now_ms() / 1000) as i64;
    let skew_s = resp
        .headers()
        .get("date")
        .and_then(|v| v.to_str().ok())
        .and_then(crate::timestamp::parse_http_date)
        .map(|server_s| server_s - now_s)
        .filter(|d| d.abs() > SKEW_WORTH_SAYING_S);
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 << 10)
        .lossy_utf8(true)
        .read_to_string()
        .unwrap_or_default();
    let code = xml_field(&body, "Code");
    let message = xml_field(&body, "Message").map(|m| m.chars().take(200).collect());
    if code.is_none() && body.to_ascii_lowercase().contains("<html") {
        return Err(S3Error::NotS3(format!(
            "HTTP {status} with an HTML page (is --endpoint an S3 endpoint?)"
        )));
    }
    Err(S3Error::Status {
        status,
        code,
        message,
        skew_s,
    })
}

/// The text of the first `<name>` element, its entities decoded.
fn xml_field(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = body.find(&open)? + open.len();
    let len = body[start..].find(&close)?;
    let v = xml_unescape(body[start..start + len].trim());
    (!v.is_empty()).then_some(v)
}

/// Decodes XML's five named entities and numeric character references; anything else is kept
/// as it is.
fn xml_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let decoded = rest.find(';').filter(|&j| j <= 10).and_then(|j| {
            let c = match &rest[1..j] {
                "lt" => Some('<'),
                "gt" => Some('>'),
                "amp" => Some('&'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                e => e
                    .strip_prefix("#x")
                    .map(|h| u32::from_str_radix(h, 16))
                    .or_else(|| e.strip_prefix('#').map(|d| d.parse::<u32>()))
                    .and_then(|n| n.ok())
                    .and_then(char::from_u32)
                    .filter(|c| !c.is_control()),
            };
            c.map(|c| (c, j + 1))
        });
        match decoded {
            Some((c, n)) => {
                out.push(c);
                rest = &rest[n..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Describes a transport error without its URL (ureq's `BadUri` carries one).
fn net_error(e: ureq::Error) -> S3Error {
    let m = match e {
        ureq::Error::Io(io) => {
            let w = io_words(&io);
            // rustls reports through io::Error; say that it is TLS, and what to check.
            if w.contains("certificate") {
                format!("the TLS certificate is not trusted ({w}): petrify trusts the public CAs")
            } else if w.contains("corrupt message") || w.contains("handshake") {
                format!("TLS handshake failed ({w}): does the endpoint speak https?")
            } else {
                w
            }
        }
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::Tls(m) => format!("TLS error: {m}"),
        ureq::Error::Rustls(e) => format!("TLS error: {e}"),
        ureq::Error::Protocol(_) => {
            return S3Error::NotS3("the answer is not valid HTTP".into());
        }
        ureq::Error::BadUri(_) => "the endpoint URL is not usable".into(),
        ureq::Error::BodyExceedsLimit(_) => {
            return S3Error::NotS3("the answer is larger than expected".into());
        }
        other => {
            // Remaining variants carry no URL; keep their kind only.
            let s = format!("{other:?}");
            s.split(['(', ' ', '{'])
                .next()
                .unwrap_or("error")
                .to_string()
        }
    };
    S3Error::Network(m)
}

/// An io::Error in words. Those raised by our own readers carry our message; OS errors say
/// what the OS said. None of them carries a URL.
pub fn io_words(e: &io::Error) -> String {
    e.to_string()
}

/// Capped exponential backoff with full jitter.
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
    seed: u64,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ (u64::from(std::process::id()) << 32);
        Backoff {
            base,
            cap,
            failures: 0,
            seed: seed | 1,
        }
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The delay before the next attempt, after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = self
            .base
            .saturating_mul(1u32 << self.failures.min(16))
            .min(self.cap);
        // xorshift64: jitter only, not security.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let frac = (self.seed % 1000) as f64 / 1000.0;
        // Between half and all of the exponential delay, so retries never bunch at zero.
        exp.mul_f64(0.5 + frac / 2.0)
    }
}

/// Runs an idempotent request up to `attempts` times while it fails transiently.
pub fn retry<T>(attempts: u32, mut op: impl FnMut() -> Result<T, S3Error>) -> Result<T, S3Error> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let started = Instant::now();
    loop {
        match op() {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && backoff.failures() + 1 < attempts => {
                let d = backoff.next_delay();
                log::debug!(
                    "{e}; retrying in {:.1}s (attempt {} after {:.1}s)",
                    d.as_secs_f64(),
                    backoff.failures() + 1,
                    started.elapsed().as_secs_f64()
                );
                std::thread::sleep(d);
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_errors() {
        let st = |status, code: Option<&str>| S3Error::Status {
            status,
            code: code.map(String::from),
            message: None,
            skew_s: None,
        };
        assert!(st(503, Some("SlowDown")).is_transient());
        assert!(st(500, None).is_transient());
        assert!(st(429, None).is_transient());
        assert!(st(400, Some("RequestTimeout")).is_transient());
        assert!(!st(403, Some("SignatureDoesNotMatch")).is_transient());
        assert!(!st(404, Some("NoSuchBucket")).is_transient());
        assert!(S3Error::Network("reset".into()).is_transient());
        assert!(!S3Error::NotS3("html".into()).is_transient());
    }

    #[test]
    fn reads_code_and_message_only() {
        let body = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code>\
                    <Message>nope</Message><CanonicalRequest>X-Amz-Security-Token=SECRET\
                    </CanonicalRequest></Error>";
        assert_eq!(
            xml_field(body, "Code").as_deref(),
            Some("SignatureDoesNotMatch")
        );
        assert_eq!(xml_field(body, "Message").as_deref(), Some("nope"));
        assert_eq!(xml_field(body, "Missing"), None);
        let body = "<Error><Code>AccessDenied</Code><Message>Can&apos;t &quot;x&quot; &lt;&amp;&gt; \
                    &#65;&#x42; &bogus; &#0; a&b</Message></Error>";
        assert_eq!(
            xml_field(body, "Message").as_deref(),
            Some("Can't \"x\" <&> AB &bogus; &#0; a&b")
        );
    }

    #[test]
    fn a_skewed_clock_is_named_not_the_credentials() {
        let e = |code: &str, skew_s| S3Error::Status {
            status: 403,
            code: Some(code.into()),
            message: None,
            skew_s,
        };
        let m = e("RequestTimeTooSkewed", Some(-900)).to_string();
        assert!(m.contains("clock is 900s ahead of the server's"), "{m}");
        let m = e("SignatureDoesNotMatch", Some(3600)).to_string();
        assert!(m.contains("clock is 3600s behind"), "{m}");
        assert!(!m.contains("AWS_SECRET_ACCESS_KEY"), "{m}");
        let m = e("SignatureDoesNotMatch", None).to_string();
        assert!(m.contains("AWS_SECRET_ACCESS_KEY"), "{m}");
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let d: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(100) && d[0] <= Duration::from_millis(200));
        for x in &d {
            assert!(*x <= Duration::from_secs(2));
        }
        assert!(d[11] >= Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(200));
    }

    #[test]
    fn retry_stops_on_permanent_errors_and_gives_up_after_attempts() {
        let mut n = 0;
        let r: Result<(), _> = retry(3, || {
            n += 1;
            Err(S3Error::Status {
                status: 403,
                code: None,
                message: None,
                skew_s: None,
            })
        });
        assert!(r.is_err());
        assert_eq!(n, 1);
        let mut n = 0;
        let r: Result<(), _> = retry(3, || {
            n += 1;
            Err(S3Error::Network("refused".into()))
        });
        assert!(r.is_err());
        assert_eq!(n, 3);
    }
}
