//! How other stores differ from the test servers, as the proxy plays them: a bucket in another
//! region, and a listing that shows new keys late. Pure helpers over requests and raw HTTP
//! answers; `proxy` decides when to use them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The region a presigned request was signed for (from `X-Amz-Credential`).
pub fn credential_region(target: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    let cred = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("X-Amz-Credential="))?;
    let cred = cred.replace("%2F", "/").replace("%2f", "/");
    cred.split('/').nth(2).map(str::to_string)
}

/// AWS's answer to a request signed for another region than the bucket's: a HEAD gets 301
/// with `x-amz-bucket-region`, a presigned request 400 AuthorizationQueryParametersError
/// naming the region.
pub fn wrong_region(is_head: bool, signed_for: &str, region: &str) -> String {
    if is_head {
        return format!(
            "HTTP/1.1 301 Moved Permanently\r\nx-amz-bucket-region: {region}\r\n\
             content-length: 0\r\n\r\n"
        );
    }
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AuthorizationQueryParametersError\
         </Code><Message>Error parsing the X-Amz-Credential parameter; the region \
         '{signed_for}' is wrong; expecting '{region}'</Message><Region>{region}</Region></Error>"
    );
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// When each key was written through the proxy, for a listing that shows keys late.
#[derive(Default)]
pub struct Written(Mutex<HashMap<String, Instant>>);

impl Written {
    pub fn record(&self, key: String) {
        self.0.lock().unwrap().insert(key, Instant::now());
    }

    /// Whether `key` was written less than `lag` ago.
    pub fn recent(&self, key: &str, lag: Duration) -> bool {
        self.0
            .lock()
            .unwrap()
            .get(key)
            .is_some_and(|t| t.elapsed() < lag)
    }
}

/// The key a path-style request names (`/bucket/key`).
pub fn path_key(target: &str) -> Option<String> {
    let path = target.split('?').next()?;
    let rest = path.strip_prefix('/')?;
    let (_, key) = rest.split_once('/')?;
    (!key.is_empty()).then(|| key.to_string())
}

/// Whether a response's status is 2xx.
pub fn succeeded(resp: &[u8]) -> bool {
    resp.starts_with(b"HTTP/1.1 2") || resp.starts_with(b"HTTP/1.0 2")
}

/// A ListObjectsV2 answer without the `<Contents>` entries whose key `hide` says: re-sent with
/// a Content-Length (the upstream's may be chunked).
pub fn hide_keys(resp: &[u8], hide: impl Fn(&str) -> bool) -> Vec<u8> {
    let Some(head_end) = resp.windows(4).position(|w| w == b"\r\n\r\n") else {
        return resp.to_vec();
    };
    let head = String::from_utf8_lossy(&resp[..head_end]).to_string();
    let raw = &resp[head_end + 4..];
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = match chunked {
        true => dechunk(raw),
        false => raw.to_vec(),
    };
    let text = String::from_utf8_lossy(&body).to_string();
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    let mut hidden = 0usize;
    while let Some(start) = rest.find("<Contents>") {
        let Some(len) = rest[start..].find("</Contents>") else {
            break;
        };
        let end = start + len + "</Contents>".len();
        let entry = &rest[start..end];
        let key = entry
            .split_once("<Key>")
            .and_then(|(_, k)| k.split_once("</Key>"))
            .map(|(k, _)| k.replace("&amp;", "&"))
            .unwrap_or_default();
        out.push_str(&rest[..start]);
        match hide(&key) {
            true => hidden += 1,
            false => out.push_str(entry),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    if hidden > 0
        && let Some(a) = out.find("<KeyCount>")
        && let Some(b) = out[a..].find("</KeyCount>")
    {
        let n: usize = out[a + 10..a + b].trim().parse().unwrap_or(0);
        out.replace_range(a + 10..a + b, &n.saturating_sub(hidden).to_string());
    }
    let mut new_head = String::new();
    for line in head.split("\r\n") {
        let l = line.to_ascii_lowercase();
        if l.starts_with("content-length:") || l.starts_with("transfer-encoding:") {
            continue;
        }
        new_head.push_str(line);
        new_head.push_str("\r\n");
    }
    new_head.push_str(&format!("content-length: {}\r\n\r\n", out.len()));
    let mut v = new_head.into_bytes();
    v.extend_from_slice(out.as_bytes());
    v
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&raw[..eol]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        raw = &raw[eol + 2..];
        if size == 0 || raw.len() < size {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[(size + 2).min(raw.len())..];
    }
}

/// AWS's answer to DeleteObjects from a key without `s3:DeleteObject`: 200, and AccessDenied
/// for each key of the request body.
pub fn deletes_denied(request: &str) -> String {
    let mut body = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><DeleteResult \
         xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
    );
    for part in request.split("<Key>").skip(1) {
        if let Some((key, _)) = part.split_once("</Key>") {
            body.push_str(&format!(
                "<Error><Key>{key}</Key><Code>AccessDenied</Code><Message>Access Denied\
                 </Message></Error>"
            ));
        }
    }
    body.push_str("</DeleteResult>");
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}
