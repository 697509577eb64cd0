//! `petrify doctor`: tries, on scratch keys under the prefix, everything petrify relies on a
//! store for, and says for each what it found: `ok`, `degraded` (what petrify does instead,
//! and what that costs) or `broken` (which command fails, and why). The scratch keys live
//! under `PREFIX/petrify-doctor/`, outside the layout, and are all deleted at the end; nothing
//! else is touched.

use std::io::Write;

use crate::bucket::Place;
use crate::error::{Error, Exit, Result};
use crate::s3::{ObjectStore, Piece, S3Error, Store};
use crate::timestamp;

mod report;

pub use report::{Check, Verdict};
use report::{json, status, text};

/// What `petrify doctor` is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorRequest {
    pub place: Place,
    pub json: bool,
}

/// Bytes of the object the multipart check copies a part from: AWS's smallest part.
const COPY_SOURCE: usize = crate::compaction::PART_MIN as usize;

/// `petrify doctor`: the checks, one line each (or one JSON object), then the IAM actions.
/// Exit status: 0 when every check is ok, 69 when persist would run degraded, 77 or 78 when
/// it cannot run.
pub fn doctor(req: &DoctorRequest, store: &Store, out: &mut dyn Write) -> Result<()> {
    let scratch = format!(
        "{}petrify-doctor/{}-{}/",
        crate::layout::root(&req.place.prefix).trim_end_matches("petrify-v1/"),
        std::process::id(),
        timestamp::now_ms()
    );
    let mut checks = Vec::new();
    run_checks(req, store, &scratch, &mut checks);
    // Scratch keys exist only once a PUT was tried (a store that refuses listing, say, never
    // got that far: nothing to clean, and nothing to say about it).
    let wrote = checks.iter().any(|c| c.name == "put");
    if let Some(why) = wrote.then(|| cleanup(store, &scratch)).flatten() {
        checks.push(Check {
            name: "cleanup",
            verdict: Verdict::Degraded,
            detail: format!("scratch keys under {scratch} are left: {why}; delete them by hand"),
        });
    }
    let text = match req.json {
        true => json(&checks),
        false => text(&checks),
    };
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(Error::new(
            Exit::Io,
            format!("cannot write the report: {e}"),
        ));
    }
    match status(&checks) {
        None => Ok(()),
        Some(exit) => Err(Error::new(
            exit,
            format!(
                "{} of {} check(s) under {} are not ok (listed above)",
                checks.iter().filter(|c| c.verdict != Verdict::Ok).count(),
                checks.len(),
                req.place.describe()
            ),
        )),
    }
}

/// The broken verdict an S3 error calls for: a refusal is a permission, anything else the
/// configuration (endpoint, region, bucket).
fn broken(e: &S3Error) -> Verdict {
    match e.status() {
        Some(401 | 403) => Verdict::Broken(Exit::NoPerm),
        _ => Verdict::Broken(Exit::Config),
    }
}

/// Runs the checks in order; a check that leaves nothing to build on stops the rest.
fn run_checks(req: &DoctorRequest, store: &Store, scratch: &str, checks: &mut Vec<Check>) {
    let mut say = |name, verdict, detail: String| {
        checks.push(Check {
            name,
            verdict,
            detail,
        });
        verdict
    };
    match store.probe_identity() {
        Ok((from, key)) => say(
            "credentials",
            Verdict::Ok,
            format!("from {from} (key {key})"),
        ),
        Err(e) => {
            say("credentials", Verdict::Broken(Exit::Config), e.to_string());
            return;
        }
    };
    let bucket = match store.probe_bucket() {
        Ok(a) => a,
        Err(e) => {
            say("bucket", broken(&e), e.to_string());
            return;
        }
    };
    let region = bucket.region.clone();
    match (bucket.status, &region) {
        (200..=299, Some(r)) if *r == store.region() => say("region", Verdict::Ok, r.clone()),
        (200..=299, None) => say(
            "region",
            Verdict::Ok,
            format!("the store names none; signing for {}", store.region()),
        ),
        (_, Some(r)) if *r != store.region() => {
            say(
                "region",
                Verdict::Broken(Exit::Config),
                format!(
                    "the bucket is in {r}, not {}: give --region {r}",
                    store.region()
                ),
            );
            return;
        }
        (404, _) => {
            say(
                "bucket",
                Verdict::Broken(Exit::Config),
                format!("no bucket {} at this endpoint", req.place.bucket),
            );
            return;
        }
        (401 | 403, _) => {
            say(
                "bucket",
                Verdict::Broken(Exit::NoPerm),
                format!(
                    "HTTP {}: the credentials may not use this bucket",
                    bucket.status
                ),
            );
            return;
        }
        (s, _) => {
            say("bucket", Verdict::Broken(Exit::Config), format!("HTTP {s}"));
            return;
        }
    };
    match bucket.date_s {
        None => say(
            "clock",
            Verdict::Ok,
            "the store sends no Date to compare".into(),
        ),
        Some(server) => {
            let skew = server - (timestamp::now_ms() / 1000) as i64;
            let v = match skew.abs() {
                0..60 => Verdict::Ok,
                60..900 => Verdict::Degraded,
                _ => Verdict::Broken(Exit::Config),
            };
            say(
                "clock",
                v,
                format!(
                    "{skew:+} s against the store's (requests are refused beyond 15 minutes; \
                     points are stamped with this host's clock)"
                ),
            )
        }
    };
    if let Err(e) = store.list(scratch) {
        say("list", broken(&e), format!("{e}: every command lists"));
        return;
    }
    say("list", Verdict::Ok, "ListObjectsV2".into());
    let first = format!("{scratch}first");
    let bytes = b"petrify doctor: a scratch object\n";
    let crc = crate::s3::crc32_base64(crc32fast::hash(bytes));
    match store.probe_put(&first, bytes, &crc) {
        Ok(a) if a.ok() => say("put", Verdict::Ok, "PUT with x-amz-checksum-crc32".into()),
        Ok(a) if a.status == 403 => {
            say(
                "put",
                Verdict::Broken(Exit::NoPerm),
                "PUT refused (403): persist cannot write".into(),
            );
            return;
        }
        Ok(a) => {
            let plain = store.put(&first, &mut &bytes[..], bytes.len() as u64, None);
            match plain {
                Err(e) if e.refuses_server_side() => {
                    say(
                        "put",
                        Verdict::Broken(Exit::Config),
                        format!(
                            "{e}: the store does not take the --storage-class or --sse given; \
                             persist would stop with 78"
                        ),
                    );
                    return;
                }
                Ok(()) => say(
                    "put",
                    Verdict::Degraded,
                    format!(
                        "x-amz-checksum-crc32 refused (HTTP {}{}): persist uploads without it, \
                         and damage in transit is found at recovery by the CRC-32 in each key",
                        a.status,
                        a.code.map(|c| format!(" {c}")).unwrap_or_default()
                    ),
                ),
                Err(e) => {
                    say("put", broken(&e), format!("{e}: persist cannot write"));
                    return;
                }
            }
        }
        Err(e) => {
            say("put", broken(&e), format!("{e}: persist cannot write"));
            return;
        }
    };
    let wrong = format!("{scratch}wrong");
    let bad_crc = crate::s3::crc32_base64(crc32fast::hash(bytes) ^ 1);
    match store.probe_put(&wrong, bytes, &bad_crc) {
        Ok(a) if a.code.as_deref() == Some("BadDigest") || a.status == 400 => say(
            "checksum checked",
            Verdict::Ok,
            "a wrong x-amz-checksum-crc32 is refused".into(),
        ),
        Ok(a) => say(
            "checksum checked",
            Verdict::Degraded,
            format!(
                "a wrong checksum was accepted (HTTP {}): bytes damaged on the way are kept, \
                 and found only by recover and verify --deep",
                a.status
            ),
        ),
        Err(e) => say("checksum checked", Verdict::Degraded, e.to_string()),
    };
    match store.put_if_absent(&first, bytes) {
        Ok(false) => say(
            "conditional create",
            Verdict::Ok,
            "If-None-Match: * answered 412 for a key that exists".into(),
        ),
        Ok(true) => say(
            "conditional create",
            Verdict::Degraded,
            "If-None-Match: * is ignored (the key was replaced): the writer lease rests on its \
             read-back and on persist's checks while running; two persists started within \
             moments of each other can both begin, and one stops with 73"
                .into(),
        ),
        Err(e) => say("conditional create", Verdict::Degraded, e.to_string()),
    };
    let ranged = store.get_range(&first, 9, 16).and_then(|mut b| {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut b.reader, &mut v)
            .map_err(|e| S3Error::Network(e.to_string()))?;
        Ok(v)
    });
    match ranged {
        Ok(v) if v == bytes[9..16] => say("ranged get", Verdict::Ok, "Range: bytes=9-15".into()),
        Ok(v) => say(
            "ranged get",
            Verdict::Broken(Exit::Config),
            format!(
                "asked for 7 bytes, got {}: recover reads points inside merged objects by ranges",
                v.len()
            ),
        ),
        Err(e) => say(
            "ranged get",
            broken(&e),
            format!("{e}: recover cannot read"),
        ),
    };
    check_multipart(store, scratch, &mut say);
    match store.list(scratch) {
        Ok(l) if l.iter().any(|o| o.key == first) => say(
            "listed at once",
            Verdict::Ok,
            "a new key is in the next listing".into(),
        ),
        Ok(_) => say(
            "listed at once",
            Verdict::Degraded,
            format!(
                "a new key was missing from the next listing: persist waits at each start \
                 until its listing shows a key it wrote (up to {} s), and list, status and \
                 recover see the newest points late",
                crate::lease::LISTED_WITHIN.as_secs()
            ),
        ),
        Err(e) => say("listed at once", broken(&e), e.to_string()),
    };
    let keys: Vec<String> = match store.list(scratch) {
        Ok(l) => l.into_iter().map(|o| o.key).collect(),
        Err(_) => vec![first.clone()],
    };
    let (batch, single) = keys.split_at(keys.len().saturating_sub(1));
    match store.probe_delete_batch(batch) {
        Ok(refused) if refused.is_empty() => {
            say("batch delete", Verdict::Ok, "DeleteObjects".into())
        }
        Ok(refused) => say(
            "batch delete",
            Verdict::Degraded,
            format!("{} key(s) refused: {}", refused.len(), refused[0].1),
        ),
        Err(e) => say(
            "batch delete",
            Verdict::Degraded,
            format!("{e}: persist and prune delete one key per request instead"),
        ),
    };
    match single.first().map(|k| store.delete(k)) {
        Some(Err(e)) => say(
            "delete",
            Verdict::Degraded,
            format!("{e}: what compaction replaces and what retention drops stays in the bucket"),
        ),
        _ => say("delete", Verdict::Ok, "DeleteObject".into()),
    };
}

/// A merged object as compaction makes it: a part copied from a stored object of AWS's
/// smallest part size (UploadPartCopy), then a part sent; and, for information, whether the
/// store refuses a part under that size as AWS does (petrify never sends one).
fn check_multipart(
    store: &Store,
    scratch: &str,
    say: &mut impl FnMut(&'static str, Verdict, String) -> Verdict,
) {
    let source = format!("{scratch}copy-source");
    let big = vec![b'p'; COPY_SOURCE];
    let crc = Some(crc32fast::hash(&big));
    if let Err(e) = store.put(&source, &mut &big[..], big.len() as u64, crc) {
        say("multipart copy", Verdict::Degraded, format!("{e}"));
        return;
    }
    let merged = format!("{scratch}merged");
    let tail = b"tail";
    let composed = store.compose(
        &merged,
        vec![
            Piece::Copy {
                key: source.clone(),
                from: 0,
                to: big.len() as u64,
                crc: Some(crc32fast::hash(&big)),
            },
            Piece::Send {
                body: &mut &tail[..],
                len: tail.len() as u64,
                crc: Some(crc32fast::hash(tail)),
            },
        ],
    );
    let end = (big.len() + tail.len()) as u64;
    let last = composed
        .and_then(|()| store.get_range(&merged, big.len() as u64, end))
        .and_then(|mut b| {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut b.reader, &mut v)
                .map_err(|e| S3Error::Network(e.to_string()))?;
            Ok(v)
        });
    match last {
        Ok(v) if v == tail => say(
            "multipart copy",
            Verdict::Ok,
            "UploadPartCopy and UploadPart, completed".into(),
        ),
        Ok(_) => say(
            "multipart copy",
            Verdict::Degraded,
            "the object put together is not what was sent: merges fail, and persist uploads \
             plain deltas instead (more objects per point)"
                .into(),
        ),
        Err(e) if e.not_implemented() => say(
            "multipart copy",
            Verdict::Degraded,
            format!(
                "{e}: merged objects are sent from the file, each byte again at each merge, \
                 and stop growing at {} MiB (more objects per point)",
                crate::compaction::SEND_AT_MOST >> 20
            ),
        ),
        Err(e) => say(
            "multipart copy",
            Verdict::Degraded,
            format!(
                "{e}: merges fail, and persist uploads plain deltas instead (more objects per point)"
            ),
        ),
    };
    let small = format!("{scratch}small-parts");
    let refused = store.compose(
        &small,
        vec![
            Piece::Send {
                body: &mut &b"a"[..],
                len: 1,
                crc: Some(crc32fast::hash(b"a")),
            },
            Piece::Send {
                body: &mut &b"b"[..],
                len: 1,
                crc: Some(crc32fast::hash(b"b")),
            },
        ],
    );
    say(
        "small parts",
        Verdict::Ok,
        match refused {
            Err(e) => format!(
                "a part under {} MiB is refused ({e}), as AWS does; petrify never sends one",
                COPY_SOURCE >> 20
            ),
            Ok(()) => format!(
                "a part under {} MiB is accepted (AWS refuses it); petrify never sends one",
                COPY_SOURCE >> 20
            ),
        },
    );
}

/// Deletes every scratch key, one by one if need be; `Some` says what is left.
fn cleanup(store: &Store, scratch: &str) -> Option<String> {
    let keys = match store.list(scratch) {
        Ok(l) => l,
        Err(e) => return Some(e.to_string()),
    };
    for o in &keys {
        let _ = store.delete(&o.key);
    }
    match store.list(scratch) {
        Ok(l) if l.is_empty() => None,
        Ok(l) => Some(format!("{} key(s)", l.len())),
        Err(e) => Some(e.to_string()),
    }
}
