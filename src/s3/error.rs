//! What went wrong with a request, in words safe for a log, and how S3's error answers are
//! read. Errors carry the HTTP status, S3's code and message (entities decoded) and, when the
//! server's clock disagrees with ours, the skew: never a URL, a signature or a secret.

use std::fmt;

use ureq::http::Response;

/// A difference between our clock and the server's worth naming in an error: S3 refuses
/// requests signed more than 15 minutes away from its own time.
const SKEW_WORTH_SAYING_S: i64 = 300;

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
        /// The region the store says the bucket is in, when it names one: the
        /// `x-amz-bucket-region` header, or `<Region>`/`<Endpoint>` in the error.
        region: Option<String>,
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
                        // BadDigest: bytes damaged on the way; the next attempt sends them again.
                        Some("SlowDown" | "RequestTimeout" | "InternalError" | "BadDigest")
                    )
            }
            S3Error::NotS3(_) => false,
        }
    }

    /// A refusal of the request itself, as one the store does not implement (GCS's XML API
    /// has no DeleteObjects, some stores no UploadPartCopy), rather than of what it names.
    pub fn not_implemented(&self) -> bool {
        matches!(self.status(), Some(501 | 405))
            || matches!(self.code(), Some("NotImplemented" | "MethodNotAllowed"))
    }

    /// The region the store says to sign for, when it refused a request as signed for or sent
    /// to another region (AWS: 301 PermanentRedirect, 400 AuthorizationHeaderMalformed or
    /// AuthorizationQueryParametersError for a presigned request).
    pub fn wrong_region(&self) -> Option<&str> {
        match self {
            S3Error::Status {
                status,
                code,
                region: Some(r),
                ..
            } if matches!(status, 301 | 307)
                || matches!(
                    code.as_deref(),
                    Some(
                        "PermanentRedirect"
                            | "AuthorizationHeaderMalformed"
                            | "AuthorizationQueryParametersError"
                            | "IllegalLocationConstraintException"
                    )
                )
                || (code.as_deref() == Some("InvalidArgument") && *status == 400) =>
            {
                Some(r)
            }
            _ => None,
        }
    }

    /// A refusal of a server-side option (a storage class or an encryption key the store does
    /// not have), not of the bytes or the moment.
    pub fn refuses_server_side(&self) -> bool {
        self.code().is_some_and(|c| {
            c == "InvalidStorageClass"
                || c.starts_with("KMS.")
                || c == "InvalidEncryptionAlgorithmError"
        })
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
                ..
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
                if let Some(r) = self.wrong_region() {
                    return write!(f, ": the bucket is in region {r}");
                }
                let hint = match (status, code.as_deref()) {
                    (_, Some("InvalidAccessKeyId" | "SignatureDoesNotMatch")) => {
                        "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                    }
                    (_, Some("ExpiredToken" | "TokenRefreshRequired")) => {
                        "the session token has expired: renew AWS_SESSION_TOKEN"
                    }
                    (301 | 307, _)
                    | (_, Some("PermanentRedirect" | "AuthorizationHeaderMalformed")) => {
                        "the bucket is in another region: check the region and the endpoint"
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

/// Turns a non-2xx answer into an [`S3Error`], reading S3's `<Code>` and `<Message>`. Nothing else
/// of the body is kept: S3 echoes the canonical request, which holds the session token.
pub(super) fn check(mut resp: Response<ureq::Body>) -> Result<Response<ureq::Body>, S3Error> {
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
    let region = resp
        .headers()
        .get("x-amz-bucket-region")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| xml_field(&body, "Region"))
        .or_else(|| xml_field(&body, "Endpoint").and_then(|e| endpoint_region(&e)))
        .filter(|r| is_region_name(r));
    let code = xml_field(&body, "Code");
    let message = xml_field(&body, "Message").map(|m| m.chars().take(200).collect());
    if code.is_none() && body.to_ascii_lowercase().contains("<html") {
        return Err(S3Error::NotS3(format!(
            "HTTP {status} with an HTML page (is the endpoint an S3 endpoint?)"
        )));
    }
    Err(S3Error::Status {
        status,
        code,
        message,
        skew_s,
        region,
    })
}

/// The region in an AWS endpoint a redirect names (`bkt.s3.eu-west-3.amazonaws.com`,
/// `s3-eu-west-3.amazonaws.com`); none in the global `s3.amazonaws.com`.
fn endpoint_region(endpoint: &str) -> Option<String> {
    let host = endpoint.split("://").last()?.split('/').next()?;
    let labels: Vec<&str> = host.split('.').collect();
    let s3 = labels
        .iter()
        .position(|l| *l == "s3" || l.starts_with("s3-"))?;
    let region = match labels[s3].strip_prefix("s3-") {
        Some(r) => r,
        None => labels.get(s3 + 1).filter(|l| **l != "amazonaws")?,
    };
    Some(region.to_string())
}

/// Whether `s` can be a region's name (letters, digits and dashes): it is printed in advice
/// to pass on a command line.
fn is_region_name(s: &str) -> bool {
    (1..=40).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The text of the first `<name>` element, its entities decoded.
pub(super) fn xml_field(body: &str, name: &str) -> Option<String> {
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
pub(super) fn net_error(e: ureq::Error) -> S3Error {
    let m = match e {
        ureq::Error::Io(io) => {
            let w = io.to_string();
            // rustls reports through io::Error; say that it is TLS, and what to check.
            if w.contains("certificate") {
                format!(
                    "the TLS certificate is not trusted ({w}): petrify trusts the public CAs, and a private CA given in AWS_CA_BUNDLE"
                )
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
            region: None,
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
            region: None,
        };
        let m = e("RequestTimeTooSkewed", Some(-900)).to_string();
        assert!(m.contains("clock is 900s ahead of the server's"), "{m}");
        let m = e("SignatureDoesNotMatch", Some(3600)).to_string();
        assert!(m.contains("clock is 3600s behind"), "{m}");
        assert!(!m.contains("AWS_SECRET_ACCESS_KEY"), "{m}");
        let m = e("SignatureDoesNotMatch", None).to_string();
        assert!(m.contains("AWS_SECRET_ACCESS_KEY"), "{m}");
    }

    /// An answer as the store sends it, through [`check`].
    fn answer(status: u16, header: Option<(&str, &str)>, body: &str) -> S3Error {
        let mut b = ureq::http::Response::builder().status(status);
        if let Some((k, v)) = header {
            b = b.header(k, v);
        }
        let resp = b
            .body(ureq::Body::builder().data(body.as_bytes().to_vec()))
            .expect("a response");
        check(resp).expect_err("an error status")
    }

    #[test]
    fn the_region_a_store_names_is_read_from_each_of_its_answers() {
        let presigned = "<Error><Code>AuthorizationQueryParametersError</Code><Message>Error \
                         parsing the X-Amz-Credential parameter; the region 'us-east-1' is wrong; \
                         expecting 'eu-west-3'</Message><Region>eu-west-3</Region></Error>";
        let e = answer(400, None, presigned);
        assert_eq!(e.wrong_region(), Some("eu-west-3"));
        assert!(
            e.to_string().ends_with("the bucket is in region eu-west-3"),
            "{e}"
        );
        let e = answer(301, Some(("x-amz-bucket-region", "ap-south-1")), "");
        assert_eq!(e.wrong_region(), Some("ap-south-1"));
        let redirect = "<Error><Code>PermanentRedirect</Code><Message>use the endpoint\
                        </Message><Endpoint>bkt.s3.eu-north-1.amazonaws.com</Endpoint></Error>";
        assert_eq!(
            answer(301, None, redirect).wrong_region(),
            Some("eu-north-1")
        );
        // The global endpoint names no region: the old advice stands.
        let global = redirect.replace("bkt.s3.eu-north-1.amazonaws.com", "s3.amazonaws.com");
        let e = answer(301, None, &global);
        assert_eq!(e.wrong_region(), None);
        assert!(
            e.to_string().contains("check the region and the endpoint"),
            "{e}"
        );
        assert_eq!(
            endpoint_region("s3-us-west-2.amazonaws.com").as_deref(),
            Some("us-west-2")
        );
        // A region is named only where the store says it is the wrong one, and only when it
        // is printable on a command line.
        let denied = "<Error><Code>AccessDenied</Code><Region>eu-west-3</Region></Error>";
        assert_eq!(answer(403, None, denied).wrong_region(), None);
        let odd = "<Error><Code>AuthorizationHeaderMalformed</Code><Region>a b;rm</Region></Error>";
        assert_eq!(answer(400, None, odd).wrong_region(), None);
    }
}
