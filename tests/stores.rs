//! Persist on stores that lack what AWS has, played by the test proxy in front of the run's S3
//! server: no multipart copies, a bucket in another region, a listing that shows new keys
//! late. Each scenario ends with the recovered bytes compared to the file's. (Stores without
//! batch deletes or checksums, and conditional creates ignored, are in tests/doctor.rs and
//! tests/trust.rs.)

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::proxy::Proxy;
use common::quirks;
use common::*;

const MIB: usize = 1 << 20;

/// Bytes that differ from one chunk to the next (a recovered chunk in the wrong place shows).
fn chunk(n: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng(seed | 1);
    (0..n).map(|_| b'a' + (r.next() % 26) as u8).collect()
}

fn recovered_via(s3: &S3, endpoint: &str, prefix: &str, out: &std::path::Path, extra: &[&str]) {
    let _ = std::fs::remove_file(out);
    let o = s3
        .petrify()
        .env("AWS_ENDPOINT_URL", endpoint)
        .args(["recover", "--bucket", BUCKET, "--prefix", prefix])
        .arg("--file")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "recover: {}", o.err());
}

/// A store without UploadPartCopy: the first refused copy is said once at WARN, no copy is
/// tried again, merges go on sending every byte from the file (objects that would have been
/// copied included), and the newest point and every other one recover whole.
#[test]
fn without_multipart_copies_merges_are_sent_from_the_file() {
    let s3 = S3::start();
    let proxy = Proxy::start(s3.port, 7, 0.0);
    proxy.config.refuse_part_copy.store(true, Ordering::SeqCst);
    let work = Scratch::new("no-copy");
    let file = work.path("log");
    std::fs::write(&file, chunk(6 * MIB, 1)).unwrap();
    let mut cmd = s3.persist_cmd(&proxy.endpoint(), "nc", &file, "0.05");
    // Plain objects: sealed merges make their objects anew, and copy nothing.
    cmd.args(["--compaction", "100ms,400ms,1600ms", "--compress", "off"]);
    let p = spawn(cmd);
    // A merged object of 5 MiB or more is copied at its next merge: keep making some until a
    // copy has been tried, then until a merge has taken one in without (every merged object
    // seen is remembered: one that a later merged object covers was among its inputs).
    let big = 6 * MIB as u64;
    let mut seen: Vec<Obj> = Vec::new();
    let mut refused_at = None;
    let merged_without_copy = |seen: &[Obj], t: u64| {
        s3.ranges("nc").iter().any(|m| {
            m.merged
                && m.time_ms > t
                && seen.iter().any(|o| {
                    o.key != m.key && m.start <= o.start && o.end <= m.end && o.time_ms < m.time_ms
                })
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    for i in 1u64.. {
        if proxy.stats.copies.load(Ordering::SeqCst) > 0 && refused_at.is_none() {
            refused_at = Some(now_ms_f() as u64);
        }
        if let Some(t) = refused_at
            && merged_without_copy(&seen, t)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "copy tried: {:?}; no merge of a merged object after it",
            refused_at
        );
        for o in s3.ranges("nc") {
            if o.merged && o.end - o.start >= big && !seen.contains(&o) {
                seen.push(o);
            }
        }
        let data = match i % 25 {
            0 => chunk(6 * MIB, i),
            _ => format!("line {i}\n").into_bytes(),
        };
        s3.append_and_wait("nc", &file, &data);
    }
    let out = p.terminate(Duration::from_secs(30));
    assert!(out.status.success(), "{}", out.err());
    assert_eq!(
        out.err().matches("does not take UploadPartCopy").count(),
        1,
        "{}",
        out.err()
    );
    assert_eq!(proxy.stats.copies.load(Ordering::SeqCst), 1);

    let restored = work.path("restored");
    recovered_via(&s3, &proxy.endpoint(), "nc", &restored, &[]);
    assert!(std::fs::read(&restored).unwrap() == std::fs::read(&file).unwrap());
    let v = s3.run(&["verify", "--bucket", BUCKET, "--prefix", "nc", "--deep"]);
    assert!(v.status.success(), "verify: {}", v.err());
    // And doctor says what persist does about it.
    let d = s3
        .petrify()
        .env("AWS_ENDPOINT_URL", proxy.endpoint())
        .args(["doctor", "--bucket", BUCKET, "--prefix", "nc-doctor"])
        .output()
        .unwrap();
    assert_eq!(d.status.code(), Some(69), "{}", text(&d.stdout));
    let line = text(&d.stdout)
        .lines()
        .find(|l| l.contains("multipart copy"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(line.starts_with("degraded"), "{line}");
    assert!(line.contains("sent from the file"), "{line}");
}

/// A bucket in another region: every command stops with 78 naming the region to give, having
/// written nothing; given it, persist and recover work.
#[test]
fn a_bucket_in_another_region_names_the_region_to_give() {
    let s3 = S3::start();
    let proxy = Proxy::start(s3.port, 7, 0.0);
    *proxy.config.bucket_region.lock().unwrap() = Some("eu-west-3".into());
    let work = Scratch::new("region");
    let file = work.path("log");
    std::fs::write(&file, b"first line\n").unwrap();
    let p = s3.persist_via(&proxy.endpoint(), "rg", &file, "0.05");
    let out = p.wait_exit(Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(78), "{}", out.err());
    let last = out.err().lines().last().unwrap_or_default().to_string();
    assert!(last.contains("the bucket is in region eu-west-3"), "{last}");
    assert!(last.contains("give --region eu-west-3"), "{last}");
    assert!(s3.keys("rg").is_empty(), "{:?}", s3.keys("rg"));
    for args in [
        &["list", "--bucket", BUCKET, "--prefix", "rg"][..],
        &["status", "--bucket", BUCKET, "--prefix", "rg"][..],
    ] {
        let o = s3
            .petrify()
            .env("AWS_ENDPOINT_URL", proxy.endpoint())
            .args(args)
            .output()
            .unwrap();
        assert_fails(&o, 78, "give --region eu-west-3");
    }

    let mut cmd = s3.persist_cmd(&proxy.endpoint(), "rg", &file, "0.05");
    cmd.args(["--region", "eu-west-3"]);
    let p = spawn(cmd);
    let content = s3.append_and_wait("rg", &file, b"second line\n");
    let out = p.terminate(Duration::from_secs(30));
    assert!(out.status.success(), "{}", out.err());
    let restored = work.path("restored");
    recovered_via(
        &s3,
        &proxy.endpoint(),
        "rg",
        &restored,
        &["--region", "eu-west-3"],
    );
    assert_eq!(std::fs::read(&restored).unwrap(), content);
}

/// A store that lists new keys 4 s late. A persist stopped moments after starting its first
/// generation, then started again on a replaced file: it waits until the store lists what was
/// written before it started, so that it numbers its new generation after the first instead of
/// taking the same number for other bytes; both files recover.
#[test]
fn a_listing_that_shows_new_keys_late_is_waited_for_at_start() {
    let s3 = S3::start();
    let proxy = Proxy::start(s3.port, 7, 0.0);
    *proxy.config.list_lag.lock().unwrap() = Some(Duration::from_secs(4));
    let work = Scratch::new("lag");
    let file = work.path("log");
    let first = chunk(1000, 1);
    std::fs::write(&file, &first).unwrap();
    let p = s3.persist_via(&proxy.endpoint(), "lg", &file, "0.05");
    wait_for(
        "the first file in the bucket",
        Duration::from_secs(30),
        || s3.uploaded_end("lg") == Some(first.len() as u64),
    );
    let out = p.terminate(Duration::from_secs(30));
    assert!(out.status.success(), "{}", out.err());
    let first_gen = s3.ranges("lg")[0].generation;

    // Replaced while persist was stopped (a restore, a rotation): other bytes.
    std::fs::remove_file(&file).unwrap();
    let second = chunk(3000, 2);
    std::fs::write(&file, &second).unwrap();
    let p = s3.persist_via(&proxy.endpoint(), "lg", &file, "0.05");
    wait_for(
        "the second file in the bucket",
        Duration::from_secs(60),
        || s3.uploaded_end("lg") == Some(second.len() as u64),
    );
    let out = p.terminate(Duration::from_secs(30));
    assert!(out.status.success(), "{}", out.err());
    // (Whether it had to wait depends on how long its start took against the lag: the
    // numbering below is what must hold either way.)
    let gens: std::collections::BTreeSet<u64> =
        s3.ranges("lg").iter().map(|o| o.generation).collect();
    assert_eq!(gens.len(), 2, "{:?}", s3.keys("lg"));
    assert!(gens.iter().all(|&g| g >= first_gen));

    // Once the store lists what was written, each generation's point gives its own file.
    let list = || {
        let o = s3
            .petrify()
            .env("AWS_ENDPOINT_URL", proxy.endpoint())
            .args(["list", "--bucket", BUCKET, "--prefix", "lg"])
            .output()
            .unwrap();
        assert!(o.status.success(), "list: {}", o.err());
        text(&o.stdout)
    };
    wait_for("the listing to catch up", Duration::from_secs(30), || {
        list() == s3.list_raw("lg")
    });
    let points = s3.list("lg");
    let restored = work.path("restored");
    recovered_via(&s3, &proxy.endpoint(), "lg", &restored, &[]);
    assert!(std::fs::read(&restored).unwrap() == second);
    let old = points
        .iter()
        .rfind(|p| p.generation == first_gen)
        .expect("a point of the first generation");
    recovered_via(
        &s3,
        &proxy.endpoint(),
        "lg",
        &restored,
        &["--at-timestamp", &old.unix],
    );
    assert!(std::fs::read(&restored).unwrap() == first);
}

#[test]
fn the_proxy_plays_other_stores_as_they_answer() {
    let t = "/bkt/a/b?X-Amz-Algorithm=AWS4&X-Amz-Credential=K%2F20261207%2Feu-west-3%2Fs3%2F\
             aws4_request&x=1";
    assert_eq!(quirks::credential_region(t).as_deref(), Some("eu-west-3"));
    assert_eq!(quirks::path_key(t).as_deref(), Some("a/b"));
    assert_eq!(quirks::path_key("/bkt?list-type=2"), None);
    let body = "<L><KeyCount>2</KeyCount><Contents><Key>a</Key></Contents>\
                <Contents><Key>b</Key></Contents></L>";
    let resp = format!(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let out = String::from_utf8(quirks::hide_keys(resp.as_bytes(), |k| k == "a")).unwrap();
    assert!(
        out.ends_with("<L><KeyCount>1</KeyCount><Contents><Key>b</Key></Contents></L>"),
        "{out}"
    );
    assert!(out.contains("content-length: 62\r\n"), "{out}");
}
