//! History an intruder cannot destroy: on a versioned bucket with Object Lock (moto, which
//! follows AWS's rules for both), persist writes with `--lock-days`; an "intruder" holding the
//! same key deletes every object and overwrites some; `--bucket-time` reads the bucket as it
//! was before, and the store refuses to delete a locked version. And a host whose key may not
//! delete: persist keeps uploading, every point recovers, and `prune` from a key that may
//! delete runs beside it.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::proxy::Proxy;
use common::*;

const VAULT: &str = "vault";

/// `petrify ARGS --bucket BUCKET --prefix PREFIX` against `s3`.
fn petrify(s3: &S3, bucket: &str, prefix: &str, args: &[&str]) -> std::process::Output {
    s3.petrify()
        .args(args)
        .args(["--bucket", bucket, "--prefix", prefix])
        .output()
        .expect("run petrify")
}

/// Every key under `prefix` of `bucket` on moto, over plain HTTP (moto checks no signature).
fn moto_keys(s3: &S3, bucket: &str, prefix: &str) -> Vec<String> {
    let body = ureq::get(&format!("{}/{bucket}", s3.endpoint()))
        .query("list-type", "2")
        .query("prefix", prefix)
        .call()
        .expect("listing moto")
        .body_mut()
        .read_to_string()
        .expect("a listing");
    body.split("<Key>")
        .skip(1)
        .filter_map(|p| p.split_once("</Key>").map(|(k, _)| k.to_string()))
        .collect()
}

/// A request to `bucket` on `s3` as the persisting host's key would send it: signed
/// (moto refuses an unsigned one for an object a multipart upload completed, as AWS does for
/// any), with `query` and `headers`.
fn signed(
    s3: &S3,
    bucket: &str,
    (method, key): (&str, &str),
    query: &[(&str, &str)],
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>) {
    use rusty_s3::S3Action;
    let b = rusty_s3::Bucket::new(
        s3.endpoint().parse().expect("an endpoint URL"),
        rusty_s3::UrlStyle::Path,
        bucket.to_string(),
        "us-east-1",
    )
    .expect("a bucket");
    let creds = rusty_s3::Credentials::new(ACCESS_KEY, SECRET_KEY);
    fn fill<'a>(a: &mut impl S3Action<'a>, query: &[(&str, &str)], headers: &[(&str, &str)]) {
        for (k, v) in query {
            a.query_mut().insert(k.to_string(), v.to_string());
        }
        for (k, v) in headers {
            a.headers_mut().insert(k.to_string(), v.to_string());
        }
    }
    let ttl = Duration::from_secs(60);
    let url = match method {
        "HEAD" => {
            let mut a = rusty_s3::actions::HeadObject::new(&b, Some(&creds), key);
            fill(&mut a, query, headers);
            a.sign(ttl)
        }
        "DELETE" => {
            let mut a = rusty_s3::actions::DeleteObject::new(&b, Some(&creds), key);
            fill(&mut a, query, headers);
            a.sign(ttl)
        }
        _ => {
            let mut a = rusty_s3::actions::PutObject::new(&b, Some(&creds), key);
            fill(&mut a, query, headers);
            a.sign(ttl)
        }
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = ureq::http::Request::builder()
        .method(method)
        .uri(url.as_str());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = agent
        .run(req.body(body.to_vec()).expect("a request"))
        .expect("an answer");
    let heads = r
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    (r.status().as_u16(), heads)
}

/// Waits until the clock is in a later second than `ms` (S3 keeps times to the second).
fn next_second(ms: u64) {
    wait_for("the next second", Duration::from_secs(3), || {
        now_ms_f() as u64 / 1000 > ms / 1000
    });
}

#[test]
fn a_locked_bucket_keeps_the_history_an_intruder_destroys() {
    let s3 = S3::start_moto_server();
    s3.make_locked_bucket(VAULT);
    let work = Scratch::new("vault");
    let file = work.path("log");
    // A 6 MiB start, so that merges put objects together in the store (multipart, with
    // copies): every part and completion must carry its checksum too.
    let mut rng = Rng(7);
    let first: Vec<u8> = (0..6 << 20)
        .map(|_| b'a' + (rng.next() % 26) as u8)
        .collect();
    std::fs::write(&file, &first).unwrap();
    // Through the proxy, which counts what each write carried.
    let proxy = Proxy::start(s3.port, 7, 0.0);
    let mut cmd = s3.petrify();
    cmd.env("AWS_ENDPOINT_URL", proxy.endpoint())
        .args(["persist", "--bucket", VAULT, "--prefix", "db"])
        .arg("--file")
        .arg(&file)
        .args(["--interval", "0.05", "--lock-days", "2"])
        .args(["--compaction", "100ms,400ms,1600ms"])
        // Plain objects, whose merges copy parts (sealed ones are made anew).
        .args(["--compress", "off"]);
    let p = spawn(cmd);
    let uploaded = |len: u64| {
        moto_keys(&s3, VAULT, "db/petrify-v1/")
            .iter()
            .filter_map(|k| Obj::parse(k.strip_prefix("db/petrify-v1/")?))
            .any(|o| o.end == len)
    };
    // Until the store has copied a part (a merge of a merged object of 6 MiB), and 40 writes.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut i = 0;
    while i < 40 || proxy.stats.copies.load(Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "no part was copied");
        i += 1;
        let data: Vec<u8> = match i % 25 {
            0 => (0..6 << 20)
                .map(|_| b'a' + (rng.next() % 26) as u8)
                .collect(),
            _ => format!("write {i}\n").into_bytes(),
        };
        append(&file, &data);
        let len = std::fs::metadata(&file).unwrap().len();
        wait_for("the append in the bucket", Duration::from_secs(30), || {
            uploaded(len)
        });
    }
    let out = p.terminate(Duration::from_secs(30));
    assert!(out.status.success(), "{}", out.err());
    let content = std::fs::read(&file).unwrap();
    let listed = text(&petrify(&s3, VAULT, "db", &["list"]).stdout);
    assert!(listed.lines().count() >= 2, "{listed}");

    // Every write of an object of the layout asked for the lock (merged objects' multipart
    // creations included), and every PUT and completion carried its checksums.
    let stats = &proxy.stats;
    assert!(stats.object_writes.load(Ordering::SeqCst) > 0);
    assert_eq!(
        stats.locked_writes.load(Ordering::SeqCst),
        stats.object_writes.load(Ordering::SeqCst)
    );
    assert_eq!(stats.unchecked.load(Ordering::SeqCst), 0);
    // And the store locked them until two days from the upload (moto does not lock what a
    // multipart upload completes: tests/common/s3.rs).
    let keys = moto_keys(&s3, VAULT, "db/petrify-v1/");
    assert!(keys.iter().any(|k| k.ends_with(".merged")), "{keys:?}");
    let head = |key: &str| {
        let (status, h) = signed(&s3, VAULT, ("HEAD", key), &[], &[], b"");
        assert_eq!(status, 200, "HEAD {key}");
        let get = |n: &str| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        (
            get("x-amz-object-lock-mode"),
            get("x-amz-object-lock-retain-until-date"),
        )
    };
    for k in keys
        .iter()
        .filter(|k| !k.ends_with("writer.lease") && !k.ends_with(".merged"))
    {
        let (mode, until) = head(k);
        assert_eq!(mode.as_deref(), Some("GOVERNANCE"), "{k}");
        assert!(until.is_some(), "{k}");
    }

    // The intruder, with the same key: every object deleted, some overwritten with garbage.
    let before = now_ms_f() as u64;
    next_second(before);
    for (i, k) in keys.iter().enumerate() {
        let (status, _) = signed(&s3, VAULT, ("DELETE", k), &[], &[], b"");
        assert!(status < 300, "delete {k}: {status}");
        if i % 3 == 0 {
            // As the SDKs send it (a locked bucket takes nothing without a checksum).
            let sdk = [("x-amz-sdk-checksum-algorithm", "CRC32")];
            let (status, _) = signed(&s3, VAULT, ("PUT", k), &[], &sdk, b"garbage");
            assert!(status < 300, "overwrite {k}: {status}");
        }
    }
    let now = petrify(&s3, VAULT, "db", &["list"]);
    assert_ne!(text(&now.stdout), listed, "the intruder changed nothing");

    // The bucket as it was: the same points, the same bytes, verified.
    let t = format!("{:.3}", before as f64 / 1000.0);
    let was = petrify(&s3, VAULT, "db", &["list", "--bucket-time", &t]);
    assert!(was.status.success(), "{}", text(&was.stderr));
    assert_eq!(text(&was.stdout), listed);
    let restored = work.path("restored");
    let recover = |extra: &[&str]| {
        let _ = std::fs::remove_file(&restored);
        let rec = s3
            .petrify()
            .args([
                "recover",
                "--bucket",
                VAULT,
                "--prefix",
                "db",
                "--bucket-time",
                &t,
            ])
            .args(extra)
            .arg("--file")
            .arg(&restored)
            .output()
            .unwrap();
        assert!(rec.status.success(), "{}", text(&rec.stderr));
        std::fs::read(&restored).unwrap()
    };
    assert!(recover(&[]) == content);
    // An earlier point, too.
    let early = listed.lines().next().unwrap().split_whitespace().nth(1);
    let got = recover(&["--at-timestamp", early.unwrap()]);
    assert!(got.len() >= first.len() && content.starts_with(&got));
    let v = petrify(&s3, VAULT, "db", &["verify", "--deep", "--bucket-time", &t]);
    assert!(v.status.success(), "{}", text(&v.stderr));
    let st = petrify(&s3, VAULT, "db", &["status", "--bucket-time", &t]);
    assert!(st.status.success(), "{}", text(&st.stderr));

    // The store refuses to delete a locked version, whoever asks.
    let versions = ureq::get(&format!("{}/{VAULT}", s3.endpoint()))
        .query("versions", "")
        .query("prefix", &keys[0])
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let version = versions
        .split("<Version>")
        .nth(1)
        .and_then(|v| v.split("<VersionId>").nth(1))
        .and_then(|v| v.split_once("</VersionId>"))
        .map(|(v, _)| v.to_string())
        .expect("a version");
    let query = [("versionId", version.as_str())];
    let (status, _) = signed(&s3, VAULT, ("DELETE", &keys[0]), &query, &[], b"");
    assert_eq!(status, 403, "a locked version was deleted");
}

#[test]
fn a_bucket_without_versions_has_no_past_to_read() {
    let s3 = S3::start();
    let out = petrify(&s3, BUCKET, "p", &["list", "--bucket-time", "1764104645"]);
    assert_fails(&out, 78, "keeps no versions");
    assert!(out.err().contains("put-bucket-versioning"), "{}", out.err());
}

/// A key without `s3:DeleteObject` (the proxy refuses every deletion as AWS does): persist
/// says so once, keeps merging and uploading, marks its lease; every point recovers; `prune`
/// run with a key that may delete runs beside it and removes what merged objects replaced.
#[test]
fn a_host_that_cannot_delete_keeps_uploading_and_prune_runs_beside_it() {
    // The lease is read from the server's disk.
    let s3 = S3::start_fs();
    let proxy = Proxy::start(s3.port, 7, 0.0);
    proxy.config.refuse_deletes.store(true, Ordering::SeqCst);
    let work = Scratch::new("no-delete");
    let file = work.path("log");
    std::fs::write(&file, b"start\n").unwrap();
    let mut cmd = s3.persist_cmd(&proxy.endpoint(), "nd", &file, "0.05");
    cmd.args(["--compaction", "100ms,400ms"]);
    let p = spawn(cmd);
    let mut sizes = Vec::new();
    for i in 0..40 {
        let c = s3.append_and_wait("nd", &file, format!("line {i}\n").as_bytes());
        sizes.push(c.len() as u64);
    }
    // Replaced objects stay; the lease says this writer cannot delete.
    wait_for("a merged object", Duration::from_secs(30), || {
        s3.ranges("nd").iter().any(|o| o.merged)
    });
    wait_for("the lease to say so", Duration::from_secs(30), || {
        std::fs::read_to_string(s3.object_path("nd", "writer.lease"))
            .is_ok_and(|l| l.contains("deletes no"))
    });
    assert!(s3.chain_ranges("nd").len() < s3.ranges("nd").len());
    // prune, with a key that may delete (no proxy), beside the running persist.
    let pr = petrify(&s3, BUCKET, "nd", &["prune", "--retain", "30d"]);
    assert!(pr.status.success(), "{}", text(&pr.stderr));
    assert!(
        text(&pr.stderr).contains("pruning beside it"),
        "{}",
        text(&pr.stderr)
    );
    assert_eq!(s3.chain_ranges("nd").len(), s3.ranges("nd").len());
    let content = s3.append_and_wait("nd", &file, b"after prune\n");
    let out = p.terminate(Duration::from_secs(30));
    assert!(out.status.success(), "{}", out.err());
    assert_eq!(
        out.err().matches("refuses this key's deletions").count(),
        1,
        "{}",
        out.err()
    );
    let restored = work.path("restored");
    let rec = s3.recover("nd", &restored, &[]);
    assert!(rec.status.success(), "{}", rec.err());
    assert!(std::fs::read(&restored).unwrap() == content);
    let v = s3.run(&["verify", "--bucket", BUCKET, "--prefix", "nd", "--deep"]);
    assert!(v.status.success(), "{}", v.err());
    for p in s3.list("nd") {
        let rec = s3.recover("nd", &restored, &["--at-timestamp", &p.unix, "--force"]);
        assert!(rec.status.success(), "{}", rec.err());
        let got = std::fs::read(&restored).unwrap();
        assert_eq!(got.len() as u64, p.bytes);
        assert!(content.starts_with(&got));
    }
}
