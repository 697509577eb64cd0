//! `petrify doctor` against the run's S3 server, and through the test proxy made to behave as
//! other stores do: each check's verdict, the exit status, and the scratch keys gone.

mod common;

use std::sync::atomic::Ordering;

use common::proxy::Proxy;
use common::s3::Server;
use common::*;

/// Runs doctor against `endpoint`; returns (status, stdout, stderr).
fn doctor(s3: &S3, endpoint: &str, extra: &[&str]) -> (Option<i32>, String, String) {
    let out = s3
        .petrify()
        .env("AWS_ENDPOINT_URL", endpoint)
        .args(["doctor", "--bucket", BUCKET, "--prefix", "p"])
        .args(extra)
        .output()
        .expect("run petrify doctor");
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// The verdict doctor printed for `check`.
fn verdict<'a>(report: &'a str, check: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.get(10..).is_some_and(|rest| rest.starts_with(check)))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {check:?} line in:\n{report}"))
}

const CHECKS: &[&str] = &[
    "credentials",
    "region",
    "clock",
    "list",
    "put",
    "checksum checked",
    "conditional create",
    "ranged get",
    "multipart copy",
    "small parts",
    "listed at once",
    "batch delete",
    "delete",
];

#[test]
fn every_check_on_the_test_server_and_nothing_left_behind() {
    let s3 = S3::start();
    let (code, out, err) = doctor(&s3, &s3.endpoint(), &[]);
    for check in CHECKS {
        // moto, AWS's mock, does not check checksums (see tests/common/s3.rs).
        let want = match (s3.server, *check) {
            (Server::Moto, "checksum checked") => "degraded",
            _ => "ok",
        };
        assert_eq!(verdict(&out, check), want, "{check}:\n{out}\n{err}");
    }
    let want = match s3.server {
        Server::S3sFs => Some(0),
        Server::Moto => Some(69),
    };
    assert_eq!(code, want, "{out}\n{err}");
    assert!(out.contains("IAM actions"), "{out}");
    // Every scratch key deleted, and the layout untouched.
    assert!(s3.keys("p").is_empty(), "{:?}", s3.keys("p"));
    let (_, json, _) = doctor(&s3, &s3.endpoint(), &["--json"]);
    assert_eq!(json.lines().count(), 1, "{json}");
    assert!(
        json.starts_with("{\"checks\":[{\"check\":\"credentials\""),
        "{json}"
    );
    assert!(
        json.trim_end()
            .ends_with(&format!("\"ok\":{}}}", want == Some(0))),
        "{json}"
    );
    if s3.server == Server::S3sFs {
        let scratch = s3.dir.path(BUCKET).join("p/petrify-doctor");
        let mut left = Vec::new();
        walk_files(&scratch, &mut left);
        assert!(left.is_empty(), "{left:?}");
    }
}

fn walk_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        match e.path().is_dir() {
            true => walk_files(&e.path(), out),
            false => out.push(e.path()),
        }
    }
}

/// Stores that ignore conditional creates (Garage 2.5) or refuse the checksum header (B2, as
/// reported): degraded, status 69, and what petrify does instead said.
#[test]
fn a_store_without_conditional_creates_or_checksums_is_degraded() {
    let s3 = S3::start();
    let proxy = Proxy::start(s3.port, 7, 0.0);
    proxy
        .config
        .strip_if_none_match
        .store(true, Ordering::SeqCst);
    let (code, out, err) = doctor(&s3, &proxy.endpoint(), &[]);
    assert_eq!(code, Some(69), "{out}\n{err}");
    assert_eq!(verdict(&out, "conditional create"), "degraded", "{out}");
    assert!(out.contains("read-back"), "{out}");
    proxy
        .config
        .strip_if_none_match
        .store(false, Ordering::SeqCst);
    proxy.config.refuse_checksums.store(true, Ordering::SeqCst);
    let (code, out, err) = doctor(&s3, &proxy.endpoint(), &[]);
    assert_eq!(code, Some(69), "{out}\n{err}");
    assert_eq!(verdict(&out, "put"), "degraded", "{out}");
    assert!(out.contains("uploads without it"), "{out}");
    assert!(s3.keys("p").is_empty(), "{:?}", s3.keys("p"));
}

/// A bucket in another region: AWS answers 301 and names the region; doctor says which
/// --region to give, with status 78, and writes nothing.
#[test]
fn a_bucket_in_another_region_is_named() {
    let s3 = S3::start();
    let proxy = Proxy::start(s3.port, 7, 0.0);
    proxy.set_canned(Some(
        "HTTP/1.1 301 Moved Permanently\r\nx-amz-bucket-region: eu-west-3\r\n\
         content-length: 0\r\n\r\n"
            .into(),
    ));
    let (code, out, err) = doctor(&s3, &proxy.endpoint(), &[]);
    assert_eq!(code, Some(78), "{out}\n{err}");
    assert_eq!(verdict(&out, "region"), "broken", "{out}");
    assert!(out.contains("give --region eu-west-3"), "{out}");
}

/// `--storage-class` and `--sse aws:kms --sse-kms-key-id` on every object persist writes
/// (merged ones included; the lease keeps the default class), read back by recover with no
/// option. On moto, which records both and has KMS.
#[test]
fn storage_class_and_kms_encryption_on_every_object() {
    let s3 = S3::start_moto_server();
    // A KMS key in moto's own KMS (its API on the same port, picked by the credential scope
    // of the Authorization header; no signature checked).
    let made = ureq::post(&s3.endpoint())
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=test/20261207/us-east-1/kms/aws4_request, \
             SignedHeaders=host, Signature=0",
        )
        .header("x-amz-target", "TrentService.CreateKey")
        .header("content-type", "application/x-amz-json-1.1")
        .send("{}")
        .expect("create a KMS key on moto")
        .body_mut()
        .read_to_string()
        .unwrap();
    let key_id = made
        .split("\"KeyId\": \"")
        .nth(1)
        .or_else(|| made.split("\"KeyId\":\"").nth(1))
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no KeyId in {made}"))
        .to_string();
    let work = Scratch::new("server-side");
    let file = work.path("log");
    std::fs::write(&file, b"first\n").unwrap();
    let mut cmd = s3.persist_cmd(&s3.endpoint(), "enc", &file, "0.05");
    cmd.args([
        "--storage-class",
        "STANDARD_IA",
        "--sse",
        "aws:kms",
        "--sse-kms-key-id",
        &key_id,
        "--compaction",
        "100ms,400ms",
    ]);
    let p = spawn(cmd);
    for i in 0..20 {
        s3.append_and_wait("enc", &file, format!("line {i}\n").as_bytes());
    }
    let lease = s3.head_http("enc/petrify-v1/writer.lease");
    let out = p.terminate(std::time::Duration::from_secs(30));
    assert!(out.status.success(), "{}", out.err());
    let get = |h: &[(String, String)], name: &str| {
        h.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    };
    assert_eq!(get(&lease, "x-amz-storage-class"), None, "{lease:?}");
    assert_eq!(
        get(&lease, "x-amz-server-side-encryption").as_deref(),
        Some("aws:kms")
    );
    let objects = s3.ranges("enc");
    assert!(objects.iter().any(|o| o.merged), "{objects:?}");
    for o in &objects {
        let h = s3.head_http(&format!("enc/petrify-v1/{}", o.key));
        assert_eq!(
            get(&h, "x-amz-storage-class").as_deref(),
            Some("STANDARD_IA"),
            "{o:?}: {h:?}"
        );
        assert_eq!(
            get(&h, "x-amz-server-side-encryption").as_deref(),
            Some("aws:kms")
        );
        assert!(
            get(&h, "x-amz-server-side-encryption-aws-kms-key-id")
                .is_some_and(|k| k.contains(&key_id)),
            "{h:?}"
        );
    }
    let restored = work.path("restored");
    let out = s3.recover("enc", &restored, &[]);
    assert!(out.status.success(), "{}", out.err());
    assert_eq!(
        std::fs::read(&restored).unwrap(),
        std::fs::read(&file).unwrap()
    );

    // doctor tries the options it is given: a class the store has, and one it has not.
    let (code, out, err) = doctor(&s3, &s3.endpoint(), &["--storage-class", "STANDARD_IA"]);
    assert_eq!(verdict(&out, "put"), "ok", "{out}\n{err}");
    assert_ne!(code, Some(78), "{out}\n{err}");
    let (code, out, err) = doctor(&s3, &s3.endpoint(), &["--storage-class", "NOSUCHCLASS"]);
    assert_eq!(code, Some(78), "{out}\n{err}");
    assert_eq!(verdict(&out, "put"), "broken", "{out}");
    assert!(out.contains("--storage-class"), "{out}");
}

/// A store without DeleteObjects (GCS's XML API): doctor says so (69), and persist deletes what
/// compaction replaced one key per request, every point still recovering.
#[test]
fn a_store_without_batch_deletes_gets_single_ones() {
    let s3 = S3::start();
    let proxy = Proxy::start(s3.port, 7, 0.0);
    proxy
        .config
        .refuse_batch_delete
        .store(true, Ordering::SeqCst);
    let (code, out, err) = doctor(&s3, &proxy.endpoint(), &[]);
    assert_eq!(code, Some(69), "{out}\n{err}");
    assert_eq!(verdict(&out, "batch delete"), "degraded", "{out}");
    assert_eq!(verdict(&out, "delete"), "ok", "{out}");

    let work = Scratch::new("no-batch");
    let file = work.path("log");
    std::fs::write(&file, b"first\n").unwrap();
    let mut cmd = s3.persist_cmd(&proxy.endpoint(), "nb", &file, "0.05");
    cmd.args(["--compaction", "100ms,400ms"]);
    let p = spawn(cmd);
    for i in 0..30 {
        s3.append_and_wait("nb", &file, format!("line {i}\n").as_bytes());
    }
    let out = p.terminate(std::time::Duration::from_secs(30));
    assert!(out.status.success(), "{}", out.err());
    assert!(
        out.err().contains("does not take DeleteObjects"),
        "{}",
        out.err()
    );
    // Nothing a merged object holds is left behind (persist deletes before it stops).
    let all = s3.ranges("nb");
    assert!(all.iter().any(|o| o.merged), "{all:?}");
    assert_eq!(s3.chain_ranges("nb").len(), all.len(), "{all:?}");
    let restored = work.path("restored");
    let out = s3.recover("nb", &restored, &[]);
    assert!(out.status.success(), "{}", out.err());
    assert_eq!(
        std::fs::read(&restored).unwrap(),
        std::fs::read(&file).unwrap()
    );
}

/// Credentials the store refuses: broken with 77, and nothing said about scratch keys that
/// were never written.
#[test]
fn a_store_that_refuses_everything_is_broken_with_77() {
    let s3 = S3::start();
    let proxy = Proxy::start(s3.port, 7, 0.0);
    proxy.set_canned(Some(common::proxy::s3_error(403, "AccessDenied")));
    let (code, out, err) = doctor(&s3, &proxy.endpoint(), &[]);
    assert_eq!(code, Some(77), "{out}\n{err}");
    assert_eq!(verdict(&out, "bucket"), "broken", "{out}");
    assert!(!out.contains("cleanup"), "{out}");
}
