//! Objects put together in the store (compaction): CreateMultipartUpload, one UploadPart per
//! part sent from here or UploadPartCopy per part copied from an object already stored, then
//! CompleteMultipartUpload. Every `x-amz-copy-source` header is signed into the presigned URL
//! (rusty-s3 signs what is in `headers_mut()`), as S3 requires of `x-amz-` headers.
//!
//! Unless the store refused checksum headers, the upload is created with CRC-32 as its
//! checksum algorithm: each sent part carries its CRC-32, each copied part's comes back from
//! the store (or is the one petrify knows), and the completion lists them all, as a bucket
//! with Object Lock requires and as AWS then checks.

use std::io::Read;
use std::sync::atomic::Ordering;

use rusty_s3::S3Action;

use super::checksum::{checksum_headers, crc32_base64};
use super::error::{check, net_error};
use super::{PRESIGN_FOR, S3Error, Store};

/// A part of an object the store puts together (see [`super::ObjectStore::compose`]). `crc`:
/// the part's CRC-32, when known (a copied part's is also told by the store).
pub enum Piece<'a> {
    /// Bytes `[from, to)` of the object `key` (a full key), copied by the store.
    Copy {
        key: String,
        from: u64,
        to: u64,
        crc: Option<u32>,
    },
    /// `len` bytes read from `body`.
    Send {
        body: &'a mut dyn Read,
        len: u64,
        crc: Option<u32>,
    },
}

/// A part as the completion names it: its number, ETag, and CRC-32 when the upload has one.
struct Done {
    etag: String,
    crc: Option<u32>,
}

impl Store {
    /// One attempt at `key` made of `pieces`; on any failure the upload is aborted (best
    /// effort: a bucket lifecycle rule for incomplete uploads collects what an abort missed).
    pub(super) fn compose_object(&self, key: &str, pieces: Vec<Piece<'_>>) -> Result<(), S3Error> {
        let creds = self.credentials.get()?;
        let mut action = self.bucket.create_multipart_upload(Some(&creds), key);
        let checksums = self.checksums.load(Ordering::Relaxed) == super::Checksums::On as u8
            && pieces.iter().all(|p| match p {
                Piece::Send { crc, .. } => crc.is_some(),
                Piece::Copy { .. } => true,
            });
        let mut server_side = self.server_side.headers(true);
        if checksums {
            server_side.push(("x-amz-checksum-algorithm", "CRC32".into()));
        }
        for (k, v) in &server_side {
            action.headers_mut().insert(*k, v.clone());
        }
        let url = action.sign(PRESIGN_FOR);
        self.sending(1);
        let mut request = self.agent.post(url.as_str());
        for (k, v) in &server_side {
            request = request.header(*k, v);
        }
        let mut resp = check(request.send_empty().map_err(net_error)?)?;
        let text = read_text(&mut resp)?;
        let created =
            rusty_s3::actions::CreateMultipartUpload::parse_response(&text).map_err(|_| {
                S3Error::NotS3("the answer to CreateMultipartUpload could not be read".into())
            })?;
        let upload_id = created.upload_id().to_string();
        let result = self.send_parts(key, &upload_id, pieces, checksums);
        if result.is_err() {
            let url = self
                .bucket
                .abort_multipart_upload(Some(&creds), key, &upload_id)
                .sign(PRESIGN_FOR);
            self.sending(3);
            if let Err(e) = self
                .agent
                .delete(url.as_str())
                .call()
                .map_err(net_error)
                .and_then(check)
            {
                log::debug!("aborting the multipart upload of {key}: {e}");
            }
        }
        result
    }

    fn send_parts(
        &self,
        key: &str,
        upload_id: &str,
        pieces: Vec<Piece<'_>>,
        checksums: bool,
    ) -> Result<(), S3Error> {
        let mut done: Vec<Done> = Vec::with_capacity(pieces.len());
        for (i, piece) in pieces.into_iter().enumerate() {
            let number = u16::try_from(i + 1)
                .map_err(|_| S3Error::NotS3("more parts than a multipart upload takes".into()))?;
            let creds = self.credentials.get()?;
            let mut action = self
                .bucket
                .upload_part(Some(&creds), key, number, upload_id);
            self.sending(1);
            let part = match piece {
                Piece::Copy {
                    key: from_key,
                    from,
                    to,
                    crc,
                } => {
                    let source = format!("/{}/{}", self.bucket.name(), encode_key(&from_key));
                    let range = format!("bytes={from}-{}", to - 1);
                    action
                        .headers_mut()
                        .insert("x-amz-copy-source", source.clone());
                    action
                        .headers_mut()
                        .insert("x-amz-copy-source-range", range.clone());
                    let url = action.sign(PRESIGN_FOR);
                    let copied = self
                        .agent
                        .put(url.as_str())
                        .header("x-amz-copy-source", &source)
                        .header("x-amz-copy-source-range", &range)
                        .send_empty()
                        .map_err(net_error)
                        .and_then(check)
                        // A copy can fail after its 200 has been sent: the error is in the body.
                        .and_then(|mut resp| read_text(&mut resp))
                        .and_then(|text| {
                            let etag = xml_etag(&text).ok_or_else(|| copy_failed(&text))?;
                            let told = super::error::xml_field(&text, "ChecksumCRC32")
                                .and_then(|b| crc_from_base64(&b));
                            // The store's bytes are not the ones uploaded: no merged object
                            // is made of them (verify --deep names the object).
                            if let (Some(t), Some(c)) = (told, crc)
                                && t != c
                            {
                                return Err(S3Error::NotS3(format!(
                                    "the store's copy of {from_key} has CRC-32 {t:08x}, not \
                                     {c:08x}"
                                )));
                            }
                            Ok(Done {
                                etag,
                                crc: told.or(crc),
                            })
                        });
                    match copied {
                        Err(e) if e.not_implemented() => {
                            if !self.no_part_copy.swap(true, Ordering::Relaxed) {
                                log::warn!(
                                    "the store does not take UploadPartCopy ({e}): merges send \
                                     every byte again from the file from now on, and stop at \
                                     {} MiB (more objects per recovery point)",
                                    crate::compaction::SEND_AT_MOST >> 20
                                );
                            }
                            return Err(e);
                        }
                        copied => copied?,
                    }
                }
                Piece::Send { body, len, crc } => {
                    let headers: Vec<_> = crc
                        .filter(|_| checksums)
                        .into_iter()
                        .flat_map(checksum_headers)
                        .collect();
                    let resp = check(
                        self.put_request(action, len, &headers)
                            .send(ureq::SendBody::from_reader(body))
                            .map_err(net_error)?,
                    )?;
                    let etag = resp
                        .headers()
                        .get("etag")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                        .ok_or_else(|| {
                            S3Error::NotS3("an uploaded part came back without an ETag".into())
                        })?;
                    Done { etag, crc }
                }
            };
            if checksums && part.crc.is_none() {
                return Err(S3Error::NotS3(
                    "a copied part came back without its CRC-32".into(),
                ));
            }
            done.push(part);
        }
        let creds = self.credentials.get()?;
        let action = self.bucket.complete_multipart_upload(
            Some(&creds),
            key,
            upload_id,
            done.iter().map(|d| d.etag.as_str()),
        );
        let url = action.sign(PRESIGN_FOR);
        let body = match checksums {
            true => completion(&done),
            false => action.body(),
        };
        self.sending(1);
        let mut resp = check(
            self.agent
                .post(url.as_str())
                .send(body.as_bytes())
                .map_err(net_error)?,
        )?;
        let text = read_text(&mut resp)?;
        if text.contains("<Error>") {
            return Err(copy_failed(&text));
        }
        Ok(())
    }
}

/// The CompleteMultipartUpload body with each part's CRC-32 (rusty-s3's has ETags only).
fn completion(done: &[Done]) -> String {
    let mut body = String::from("<CompleteMultipartUpload>");
    for (i, d) in done.iter().enumerate() {
        body.push_str("<Part>");
        if let Some(c) = d.crc {
            body.push_str(&format!(
                "<ChecksumCRC32>{}</ChecksumCRC32>",
                crc32_base64(c)
            ));
        }
        let etag = d.etag.replace('&', "&amp;").replace('"', "&quot;");
        body.push_str(&format!(
            "<ETag>{etag}</ETag><PartNumber>{}</PartNumber></Part>",
            i + 1
        ));
    }
    body.push_str("</CompleteMultipartUpload>");
    body
}

/// A CRC-32 from the base64 of its 4 big-endian bytes.
fn crc_from_base64(b: &str) -> Option<u32> {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let digits = b.trim().trim_end_matches('=');
    if digits.len() != 6 {
        return None;
    }
    let mut n: u64 = 0;
    for c in digits.bytes() {
        n = (n << 6) | ABC.iter().position(|&x| x == c)? as u64;
    }
    // 36 bits: 32 of the CRC, then 4 zero bits of padding.
    (n & 0xf == 0).then_some((n >> 4) as u32)
}

fn read_text(resp: &mut ureq::http::Response<ureq::Body>) -> Result<String, S3Error> {
    resp.body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_string()
        .map_err(net_error)
}

/// The ETag in a CopyPartResult.
fn xml_etag(text: &str) -> Option<String> {
    if text.contains("<Error>") {
        return None;
    }
    let start = text.find("<ETag>")? + "<ETag>".len();
    let end = start + text[start..].find("</ETag>")?;
    Some(text[start..end].replace("&quot;", "\""))
}

/// An error S3 put in the body of a 200 (AWS does so for copies and completions).
fn copy_failed(text: &str) -> S3Error {
    let tag = |t: &str| {
        let start = text.find(&format!("<{t}>"))? + t.len() + 2;
        let end = start + text[start..].find(&format!("</{t}>"))?;
        Some(text[start..end].to_string())
    };
    match tag("Code") {
        Some(code) => S3Error::Status {
            status: 500,
            code: Some(code),
            message: tag("Message"),
            skew_s: None,
            region: None,
        },
        None => S3Error::NotS3("a copy or completion answered without a result".into()),
    }
}

/// A key as `x-amz-copy-source` wants it: URL-encoded, slashes kept.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_answers_and_keys() {
        let ok = "<?xml version=\"1.0\"?><CopyPartResult><LastModified>x</LastModified>\
                  <ETag>&quot;abc&quot;</ETag></CopyPartResult>";
        assert_eq!(xml_etag(ok).as_deref(), Some("\"abc\""));
        let bad = "<Error><Code>InternalError</Code><Message>try again</Message></Error>";
        assert_eq!(xml_etag(bad), None);
        let e = copy_failed(bad);
        assert!(e.is_transient(), "{e}");
        assert_eq!(encode_key("a b/c+d.e"), "a%20b/c%2Bd.e");
    }

    #[test]
    fn completions_name_each_parts_crc() {
        for crc in [0, 1, 0x3610_a686, u32::MAX] {
            assert_eq!(crc_from_base64(&crc32_base64(crc)), Some(crc));
        }
        assert_eq!(crc_from_base64("NhCmhg=="), Some(0x3610_a686));
        assert_eq!(crc_from_base64("NhCmhh=="), None);
        assert_eq!(crc_from_base64("x"), None);
        let body = completion(&[
            Done {
                etag: "\"a\"".into(),
                crc: Some(0x3610_a686),
            },
            Done {
                etag: "\"b\"".into(),
                crc: Some(0),
            },
        ]);
        assert_eq!(
            body,
            "<CompleteMultipartUpload><Part><ChecksumCRC32>NhCmhg==</ChecksumCRC32>\
             <ETag>&quot;a&quot;</ETag><PartNumber>1</PartNumber></Part><Part><ChecksumCRC32>\
             AAAAAA==</ChecksumCRC32><ETag>&quot;b&quot;</ETag><PartNumber>2</PartNumber>\
             </Part></CompleteMultipartUpload>"
        );
    }
}
