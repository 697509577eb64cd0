//! Petrify beside its peers (curl, the AWS CLI, rclone) against a local s3s-fs, with the
//! throttle standing in for a real region where a case needs it (a per-connection cap, added
//! latency). Prints one table of medians over interleaved runs: each case runs every tool once
//! per round, so a slow minute on the machine hits all of them alike.
//!
//! Run it with `bench/run` (installs the peers); `bench/run --smoke` is the few-second run CI
//! does. See bench/README.md for what each row measures.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;
mod marks;
mod measure;
mod month;
mod peers;
mod readers;
mod sealed;
mod throttle;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{BUCKET, S3, Scratch, spawn, wait_for};
use measure::{Sample, Table};
use peers::Peer;
use throttle::Throttle;

/// A real region's per-connection throughput, about (see issue #10 and bench/README.md).
const CAP: u64 = 50 << 20;
const LATENCY: Duration = Duration::from_millis(20);

struct Opts {
    runs: usize,
    mib: u64,
    deltas: usize,
    seconds: u64,
    smoke: bool,
    /// `--only WORD`: only the rows whose name holds WORD (to look into one case).
    only: Option<String>,
}

fn opts() -> Opts {
    let mut o = Opts {
        runs: 3,
        mib: 1024,
        deltas: 10_000,
        seconds: 60,
        smoke: false,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{what} needs a number"))
        };
        match a.as_str() {
            "--smoke" => {
                o = Opts {
                    runs: 1,
                    mib: 16,
                    deltas: 200,
                    seconds: 2,
                    smoke: true,
                    only: None,
                }
            }
            "--runs" => o.runs = num("--runs") as usize,
            "--mib" => o.mib = num("--mib"),
            "--deltas" => o.deltas = num("--deltas") as usize,
            "--seconds" => o.seconds = num("--seconds"),
            "--only" => o.only = args.next(),
            "--bench" => {} // cargo bench passes it
            other => panic!(
                "unknown argument {other:?}: --smoke, --runs N, --mib N, --deltas N, --seconds N, --only WORD"
            ),
        }
    }
    o
}

fn main() {
    let o = opts();
    let s3 = S3::start();
    let work = Scratch::new("bench");
    // The smoke run checks the harness, not the peers: CI does not install them.
    let peers: Vec<Peer> = Peer::all(&s3, &work)
        .into_iter()
        .filter(|p| !o.smoke || p.name == "curl")
        .collect();
    let names: Vec<&str> = peers.iter().map(|p| p.name).collect();
    eprintln!("bench: {} round(s); peers: {}", o.runs, names.join(", "));

    let size = o.mib << 20;
    let big = work.path("big");
    measure::random_file(&big, size);
    let chain = plant_deltas(&s3, o.deltas);
    let capped = Throttle::start(s3.port, Some(CAP), Duration::ZERO);
    let slow = Throttle::start(s3.port, None, LATENCY);

    // petrify (None) and the peers, each case's tools in an order that turns every round.
    let tools: Vec<Option<&Peer>> = std::iter::once(None)
        .chain(peers.iter().map(Some))
        .collect();
    let mut t = Table::default();
    let gib = format!("{} MiB", o.mib);
    // The recover rows of N MiB read what the upload rows stored: `--only MiB` runs both.
    let want = |row: &str| o.only.as_deref().is_none_or(|w| row.contains(w));
    for round in 1..=o.runs {
        eprintln!("bench: round {round}");
        for cold in [false, true] {
            let row = format!(
                "upload {gib}, {}",
                if cold { "cold cache" } else { "warm cache" }
            );
            if !want(&row) {
                continue;
            }
            for tool in in_turn(&tools, round) {
                let Some(p) = tool else {
                    t.add(&row, "petrify", upload_petrify(&s3, &big, size, cold));
                    continue;
                };
                // Gone first, or rclone would see it there and skip the upload.
                let _ = std::fs::remove_file(s3.dir.path(BUCKET).join("peer").join(p.name));
                measure::cache(&big, cold);
                t.add(&row, p.name, p.upload(&big, &format!("peer/{}", p.name)));
            }
        }
        for (label, endpoint) in [
            (format!("recover {gib}"), s3.endpoint()),
            (
                format!("recover {gib}, 50 MiB/s per connection"),
                capped.endpoint(),
            ),
        ] {
            if !want(&label) {
                continue;
            }
            let out = work.path("out");
            for tool in in_turn(&tools, round) {
                let sample = match tool {
                    None => recover_petrify(&s3, &endpoint, "big", &out, Some(&big)),
                    // Each peer fetches the 1 GiB object curl uploaded: one object, as
                    // petrify's is.
                    Some(p) => p.download(&endpoint, "peer/curl", &out),
                };
                t.add(&label, tool.map_or("petrify", |p| p.name), sample);
            }
        }
        for (label, endpoint) in [
            (format!("recover {} deltas", o.deltas), s3.endpoint()),
            (
                format!("recover {} deltas, +20 ms per request", o.deltas),
                slow.endpoint(),
            ),
        ] {
            if !want(&label) {
                continue;
            }
            let out = work.path("out");
            // curl cannot list a prefix: no figure of its own here.
            for tool in in_turn(&tools, round) {
                let sample = match tool {
                    None => recover_petrify(&s3, &endpoint, "chain", &out, Some(&chain)),
                    Some(p) if p.name == "curl" => continue,
                    Some(p) => p.download_all(&endpoint, "chain", &work.path("outdir")),
                };
                t.add(&label, tool.map_or("petrify", |p| p.name), sample);
            }
        }
        let window = Duration::from_secs(o.seconds);
        if want("steady 1 MiB/s") {
            measure::steady(&s3, &work, window, &mut t);
        }
        if want("idle") {
            measure::idle(&s3, &work, window, &mut t);
        }
        if want("sealed: JSON values at 1 MiB/s") || want("sealed: redis-benchmark") {
            sealed::steady(&s3, &work, window, &mut t);
        }
        if want(&format!("sealed: {} MiB AOF", o.mib)) {
            sealed::link(&s3, &work, o.mib, &mut t);
        }
        if want("Redis, a write every 100 ms") {
            marks::marks(&s3, &work, window, &mut t);
        }
        if want("simulated month") {
            month::month(&s3, &work, window, &mut t);
        }
        if want("planted month") {
            // A month of one-second points; the smoke run plants a day's worth.
            let points = if o.smoke { 86_400 } else { 2_592_000 };
            readers::readers(&s3, &work, points, &mut t);
        }
    }
    print!("{}", t.render(&names, &machine(&peers)));
}

/// The tools of a case in the order they run in `round` (from 1): each round starts one further
/// along, so that none is always the first to run after the case before (whose writes the disk
/// and the store may still be finishing; a fixed order had petrify first in every case).
fn in_turn<T: Copy>(tools: &[T], round: usize) -> Vec<T> {
    let mut out = tools.to_vec();
    if !out.is_empty() {
        out.rotate_left((round.max(1) - 1) % tools.len());
    }
    out
}

/// Uploads `file` with a fresh `petrify persist` and times it from start to the last byte in
/// the bucket.
fn upload_petrify(s3: &S3, file: &Path, size: u64, cold: bool) -> Sample {
    let _ = std::fs::remove_dir_all(s3.dir.path(BUCKET).join("big"));
    measure::cache(file, cold);
    let start = Instant::now();
    let mut cmd = s3.persist_cmd(&s3.endpoint(), "big", file, "0.05");
    // debug: one line per object acknowledged, for the steps printed below.
    cmd.env("RUST_LOG", "info,petrify=debug");
    let p = spawn(cmd);
    wait_for("the upload", Duration::from_secs(900), || {
        s3.uploaded_end("big") == Some(size)
    });
    let secs = start.elapsed().as_secs_f64();
    let rss = measure::peak_rss_kib(p.pid());
    let exit = p.terminate(Duration::from_secs(30));
    assert!(exit.status.success(), "persist failed: {}", exit.stderr);
    eprintln!("bench: petrify's steps, ms: {}", steps(&exit.stderr));
    Sample::time(secs).rss(rss)
}

/// From persist's log: ms from its first line to the generation's start, then to each object
/// acknowledged after the one before (where an upload's time goes).
fn steps(log: &str) -> String {
    // "[2026-11-28T14:52:27.536Z DEBUG] ...": the time of day in ms.
    let ms = |line: &str| -> Option<f64> {
        let t = line.get(12..24)?;
        let mut f = t.split(':').map(|x| x.parse::<f64>().ok());
        Some(((f.next()?? * 60.0 + f.next()??) * 60.0 + f.next()??) * 1000.0)
    };
    let mut out = Vec::new();
    let mut prev: Option<f64> = None;
    for line in log.lines() {
        let Some(t) = ms(line) else { continue };
        let step = line.contains("starting generation") || line.contains("] uploaded ");
        match prev {
            None => prev = Some(t),
            Some(p) if step => {
                out.push(format!("{:.0}", t - p));
                prev = Some(t);
            }
            Some(_) => {}
        }
    }
    out.join(" ")
}

/// Times `petrify recover` of `prefix` into `out` through `endpoint`; checks the bytes.
fn recover_petrify(
    s3: &S3,
    endpoint: &str,
    prefix: &str,
    out: &Path,
    expect: Option<&Path>,
) -> Sample {
    let _ = std::fs::remove_file(out);
    let mut cmd = s3.petrify();
    cmd.env("AWS_ENDPOINT_URL", endpoint)
        .env("RUST_LOG", "warn")
        .args(["recover", "--bucket", BUCKET, "--prefix", prefix])
        .arg("--file")
        .arg(out);
    let s = measure::timed(cmd);
    if let Some(want) = expect {
        assert!(measure::same_bytes(out, want), "recovered bytes differ");
    }
    s
}

/// Plants a chain of `n` deltas of ~1 KiB straight into the server's folder (s3s-fs serves
/// plain files), as a month of quiet writes would leave them; returns the file they make.
fn plant_deltas(s3: &S3, n: usize) -> std::path::PathBuf {
    let dir = s3
        .dir
        .path(BUCKET)
        .join("chain/petrify-v1/0000000001-file/file");
    std::fs::create_dir_all(&dir).expect("chain folder");
    let expected = s3.dir.path("chain.expected");
    let mut log = Vec::new();
    let t0 = 1_764_104_645_000u64;
    for i in 0..n {
        let data = format!("record {i:08} {}\n", "x".repeat(1000)).into_bytes();
        let (a, b) = (log.len(), log.len() + data.len());
        let name = format!(
            "{a:020}-{b:020}.{:013}.{:08x}.delta",
            t0 + i as u64,
            crc32fast::hash(&data)
        );
        std::fs::write(dir.join(name), &data).expect("plant a delta");
        log.extend_from_slice(&data);
    }
    std::fs::write(&expected, &log).expect("chain.expected");
    expected
}

fn machine(peers: &[Peer]) -> BTreeMap<&'static str, String> {
    let sh = |c: &str| {
        Command::new("sh")
            .args(["-c", c])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let mut m = BTreeMap::new();
    m.insert(
        "cpu",
        sh("echo \"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) CPUs\""),
    );
    m.insert("memory", sh("free -h | awk '/Mem:/ {print $2}'"));
    m.insert("kernel", sh("uname -sr"));
    m.insert("date", sh("date -u +%Y-%m-%dT%H:%MZ"));
    m.insert("petrify", sh("git describe --always --dirty 2>/dev/null"));
    m.insert("s3", "s3s-fs 0.14.1 on loopback".to_string());
    let v: Vec<String> = peers.iter().map(|p| p.version.clone()).collect();
    m.insert("peers", v.join("; "));
    m
}
