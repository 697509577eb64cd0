//! Sealed objects (issue #22): what compression saves and costs on two real workloads, with
//! and without encryption, and a large AOF through a 50 MiB/s connection against curl of the
//! raw file.
//!
//! The workloads:
//! - **redis-benchmark's mix** through a real redis-server's AOF (`redis-benchmark -r 100000
//!   -d 100 -t set,lpush,incr,hset,sadd,zadd`): its values are runs of one letter, so it
//!   compresses far better than real data does;
//! - **JSON values**: SET commands (RESP) of user records (name, e-mail, city, score, RFC 3339
//!   time, tags, a random 24-character session id, 0-3 cart lines; 300-500 bytes each), a
//!   `#TS` mark every 50 commands, as an application's cache or session store writes them.
//!
//! Each is appended at 1 MiB/s in 100 writes a second to a file persist follows at
//! `--interval 1`, default compaction: persist's CPU per second of wall time, and the bytes
//! written over the bytes the chain stores at the end (merged objects' indexes left out).

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{ACCESS_KEY, BUCKET, Redis, S3, SECRET_KEY, Scratch, spawn, wait_for};
use crate::measure::{self, Sample, Table, Unit};
use crate::throttle::Throttle;

/// The CPU and ratio rows, for each workload and each way of sealing.
pub fn steady(s3: &S3, work: &Scratch, dur: Duration, t: &mut Table) {
    let key = work.path("bench-key.txt");
    let recipient = age_key(&key);
    let need = ((dur.as_secs() + 5) << 20) as usize;
    for (name, bytes) in [
        ("redis-benchmark AOF", benchmark_aof(work, need)),
        ("JSON values", json_values(need)),
    ] {
        for (how, args) in [
            ("--compress off", vec!["--compress", "off"]),
            ("zstd:3", vec!["--compress", "zstd:3"]),
            ("zstd:3 + age", vec!["--encrypt-to", recipient.as_str()]),
        ] {
            let row = format!("sealed: {name} at 1 MiB/s, {how}");
            let (cpu, ratio) = feed(s3, work, &bytes, dur, &args);
            t.add(
                &format!("{row}: CPU"),
                "petrify",
                Sample::of(cpu, Unit::MsPerSecond),
            );
            t.add(
                &format!("{row}: written / stored"),
                "petrify",
                Sample::of(ratio, Unit::Ratio),
            );
        }
    }
}

/// Appends `bytes` at 1 MiB/s for `dur` to a file persist (`args`) follows; returns persist's
/// CPU in ms per second and the bytes written over the bytes stored.
fn feed(s3: &S3, work: &Scratch, bytes: &[u8], dur: Duration, args: &[&str]) -> (f64, f64) {
    let prefix = "sealed-steady";
    let _ = std::fs::remove_dir_all(s3.dir.path(BUCKET).join(prefix));
    let file = work.path("sealed-steady.log");
    std::fs::write(&file, b"").expect("create the log");
    let mut cmd = s3.persist_cmd(&s3.endpoint(), prefix, &file, "1");
    cmd.env("RUST_LOG", "info").args(args);
    let p = spawn(cmd);
    wait_for("the generation's start", Duration::from_secs(30), || {
        s3.uploaded_end(prefix).is_some()
    });
    let (cpu0, _) = measure::cpu_and_switches(p.pid());
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .expect("open");
    let chunk = (1 << 20) / 100;
    let start = Instant::now();
    let mut at = 0usize;
    let mut tick = 0u64;
    while start.elapsed() < dur {
        tick += 1;
        let end = (at + chunk).min(bytes.len());
        f.write_all(&bytes[at..end]).expect("append");
        at = if end == bytes.len() { 0 } else { end };
        std::thread::sleep(
            (start + Duration::from_millis(10 * tick)).saturating_duration_since(Instant::now()),
        );
    }
    let secs = start.elapsed().as_secs_f64();
    let (cpu1, _) = measure::cpu_and_switches(p.pid());
    let written = std::fs::metadata(&file).expect("the log").len();
    wait_for(
        "the last append in the bucket",
        Duration::from_secs(60),
        || s3.uploaded_end(prefix) == Some(written),
    );
    p.terminate(Duration::from_secs(30));
    let stored: u64 = s3.chain_ranges(prefix).iter().map(|o| o.stored).sum();
    ((cpu1 - cpu0) / secs, written as f64 / stored.max(1) as f64)
}

/// A large AOF (redis-benchmark's mix, repeated to `mib` MiB) uploaded and recovered through
/// one connection capped at 50 MiB/s, petrify compressing against curl sending the raw file.
pub fn link(s3: &S3, work: &Scratch, mib: u64, t: &mut Table) {
    let size = (mib << 20) as usize;
    let aof = work.path("sealed-big.aof");
    let sample = benchmark_aof(work, 64 << 20);
    let mut f = std::fs::File::create(&aof).expect("create the AOF");
    let mut left = size;
    while left > 0 {
        let n = left.min(sample.len());
        f.write_all(&sample[..n]).expect("write the AOF");
        left -= n;
    }
    drop(f);
    let capped = Throttle::start(s3.port, Some(crate::CAP), Duration::ZERO);
    let row = |what: &str| format!("sealed: {mib} MiB AOF through 50 MiB/s, {what}");

    // petrify: persist until every byte is in, then recover over one connection.
    let prefix = "sealed-big";
    let _ = std::fs::remove_dir_all(s3.dir.path(BUCKET).join(prefix));
    let start = Instant::now();
    let mut cmd = s3.persist_cmd(&capped.endpoint(), prefix, &aof, "0.05");
    cmd.env("RUST_LOG", "info");
    let p = spawn(cmd);
    wait_for("the upload", Duration::from_secs(900), || {
        s3.uploaded_end(prefix) == Some(size as u64)
    });
    let up = start.elapsed().as_secs_f64();
    let rss = measure::peak_rss_kib(p.pid());
    p.terminate(Duration::from_secs(30));
    t.add(&row("upload"), "petrify", Sample::time(up).rss(rss));
    let out = work.path("sealed-big.out");
    let _ = std::fs::remove_file(&out);
    let mut rec = s3.petrify();
    rec.env("AWS_ENDPOINT_URL", capped.endpoint())
        .env("RUST_LOG", "warn")
        .args([
            "recover",
            "--bucket",
            BUCKET,
            "--prefix",
            prefix,
            "--parallel",
            "1",
        ])
        .arg("--file")
        .arg(&out);
    t.add(&row("recover"), "petrify", measure::timed(rec));
    assert!(measure::same_bytes(&out, &aof), "recovered bytes differ");

    // curl: the raw file, one PUT and one GET through the same kind of connection.
    let key = format!("{}/{BUCKET}/peer/sealed-big.aof", capped.endpoint());
    let mut put = curl();
    put.arg("-T").arg(&aof).arg(&key);
    t.add(&row("upload"), "curl", measure::timed(put));
    let _ = std::fs::remove_file(&out);
    let mut get = curl();
    get.arg("-o").arg(&out).arg(&key);
    t.add(&row("recover"), "curl", measure::timed(get));
    let _ = std::fs::remove_file(&out);
}

fn curl() -> Command {
    let mut c = Command::new("curl");
    c.args(["-sSf", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user"])
        .arg(format!("{ACCESS_KEY}:{SECRET_KEY}"))
        .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"]);
    c
}

/// A fresh age identity written to `path`; returns its recipient.
fn age_key(path: &Path) -> String {
    use age::secrecy::ExposeSecret;
    let k = age::x25519::Identity::generate();
    std::fs::write(path, format!("{}\n", k.to_string().expose_secret())).expect("write the key");
    k.to_public().to_string()
}

/// At least `want` bytes of a real redis-server's AOF under redis-benchmark's mix (its base and
/// incremental files, in order).
fn benchmark_aof(work: &Scratch, want: usize) -> Vec<u8> {
    let dir = work.path("bench-redis");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the Redis folder");
    let mut redis = Redis::start_with(&dir, &["--auto-aof-rewrite-percentage", "0"]);
    let aof = dir.join("appendonlydir");
    let size = || -> usize {
        std::fs::read_dir(&aof)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len() as usize)
                    .sum()
            })
            .unwrap_or(0)
    };
    while size() < want {
        let out = Command::new("redis-benchmark")
            .args([
                "-p",
                &redis.port.to_string(),
                "-q",
                "-n",
                "100000",
                "-r",
                "100000",
            ])
            .args(["-d", "100", "-t", "set,lpush,incr,hset,sadd,zadd"])
            .output()
            .expect("run redis-benchmark");
        assert!(out.status.success(), "redis-benchmark failed");
    }
    redis.stop();
    let mut names: Vec<String> = std::fs::read_dir(&aof)
        .expect("the AOF folder")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".aof"))
        .collect();
    // The base first, then the incremental files in order.
    names.sort_by_key(|n| (!n.contains(".base."), n.clone()));
    let mut out = Vec::new();
    for n in names {
        out.extend(std::fs::read(aof.join(n)).expect("read the AOF"));
    }
    out
}

/// At least `want` bytes of RESP SET commands of JSON user records (see the module doc).
fn json_values(want: usize) -> Vec<u8> {
    const NAMES: [&str; 8] = ["ana", "bo", "chen", "dario", "eve", "fatou", "gus", "hana"];
    const CITIES: [&str; 6] = ["Lisbon", "Osaka", "Lagos", "Denver", "Tallinn", "Quito"];
    const TAGS: [&str; 6] = ["new", "vip", "beta", "churn-risk", "mobile", "eu"];
    let mut r = crate::common::Rng(42);
    let mut out = Vec::with_capacity(want + 4096);
    let mut n = 0u64;
    while out.len() < want {
        n += 1;
        if n.is_multiple_of(50) {
            out.extend(format!("#TS:{}\r\n", 1_765_000_000 + n / 50).into_bytes());
        }
        let id = r.below(1_000_000);
        let name = NAMES[r.below(8) as usize];
        let session: String = (0..24)
            .map(|_| (b'a' + r.below(26) as u8) as char)
            .collect();
        let cart: Vec<String> = (0..r.below(4))
            .map(|_| {
                format!(
                    "{{\"sku\":\"SKU-{:05}\",\"qty\":{},\"price\":{}.{:02}}}",
                    r.below(100_000),
                    r.below(5) + 1,
                    r.below(300),
                    r.below(100)
                )
            })
            .collect();
        let value = format!(
            "{{\"id\":{id},\"name\":\"{name} {}\",\"email\":\"{name}{id}@example.com\",\
             \"city\":\"{}\",\"score\":{},\"seen\":\"2026-12-{:02}T{:02}:{:02}:{:02}Z\",\
             \"tags\":[\"{}\",\"{}\"],\"session\":\"{session}\",\"cart\":[{}]}}",
            NAMES[r.below(8) as usize],
            CITIES[r.below(6) as usize],
            r.below(10_000),
            r.below(28) + 1,
            r.below(24),
            r.below(60),
            r.below(60),
            TAGS[r.below(6) as usize],
            TAGS[r.below(6) as usize],
            cart.join(",")
        );
        let key = format!("user:{id}");
        out.extend(
            format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n",
                key.len(),
                value.len()
            )
            .into_bytes(),
        );
    }
    out
}
