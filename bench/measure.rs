//! How the benchmark measures: wall time and peak memory of a command, CPU and wake-ups of a
//! running process (from /proc, in nanoseconds: a tick-based count cannot see 0.2 ms a
//! second), the page cache of the input, and the table of medians it prints.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::proxy::Proxy;
use crate::common::{S3, Scratch, spawn, wait_for};

#[derive(Clone, Copy, PartialEq)]
pub enum Unit {
    Seconds,
    Mib,
    MsPerSecond,
    PerSecond,
    Ms,
    /// A plain number (objects, requests).
    Count,
    /// How many times smaller (bytes written / bytes stored).
    Ratio,
}

pub struct Sample {
    value: f64,
    unit: Unit,
    rss_kib: Option<u64>,
}

impl Sample {
    pub fn time(secs: f64) -> Sample {
        Sample {
            value: secs,
            unit: Unit::Seconds,
            rss_kib: None,
        }
    }
    pub fn of(value: f64, unit: Unit) -> Sample {
        Sample {
            value,
            unit,
            rss_kib: None,
        }
    }
    pub fn rss(mut self, kib: Option<u64>) -> Sample {
        self.rss_kib = kib;
        self
    }
}

/// Samples by row and tool, in the order rows were first seen.
#[derive(Default)]
pub struct Table {
    rows: Vec<(String, Unit)>,
    cells: BTreeMap<(String, String), Vec<f64>>,
}

impl Table {
    pub fn add(&mut self, row: &str, tool: &str, s: Sample) {
        // Each sample on stderr: the table keeps only medians.
        eprintln!("bench: {row} / {tool}: {:.3}", s.value);
        self.put(row, tool, s.value, s.unit);
        // Memory targets are petrify's; the peers' is not what this table is for.
        if let (Some(kib), "petrify") = (s.rss_kib, tool) {
            self.put(
                &format!("{row}: peak RSS"),
                tool,
                kib as f64 / 1024.0,
                Unit::Mib,
            );
        }
    }

    fn put(&mut self, row: &str, tool: &str, v: f64, unit: Unit) {
        if !self.rows.iter().any(|(r, _)| r == row) {
            self.rows.push((row.to_string(), unit));
        }
        self.cells
            .entry((row.to_string(), tool.to_string()))
            .or_default()
            .push(v);
    }

    /// Markdown: one row per measurement, the median of each tool's samples, and for times
    /// each peer's as a ratio to petrify's (2.0x: petrify took half the time).
    pub fn render(&self, peers: &[&str], machine: &BTreeMap<&str, String>) -> String {
        let mut out = String::new();
        for (k, v) in machine {
            out += &format!("- {k}: {v}\n");
        }
        let runs = self.cells.values().map(Vec::len).max().unwrap_or(0);
        out +=
            &format!("- medians of {runs} interleaved run(s); ratio = peer's time / petrify's\n\n");
        out += "| measurement | petrify |";
        for p in peers {
            out += &format!(" {p} |");
        }
        out += "\n|---|---:|";
        out += &"---:|".repeat(peers.len());
        out += "\n";
        for (row, unit) in &self.rows {
            let mine = self.median(row, "petrify");
            out += &format!("| {row} | {} |", fmt(mine, *unit));
            for p in peers {
                let theirs = self.median(row, p);
                let cell = match (theirs, mine, *unit) {
                    (Some(t), Some(m), Unit::Seconds) if m > 0.0 => {
                        format!("{} ({:.2}x)", fmt(Some(t), *unit), t / m)
                    }
                    _ => fmt(theirs, *unit),
                };
                out += &format!(" {cell} |");
            }
            out += "\n";
        }
        out
    }

    fn median(&self, row: &str, tool: &str) -> Option<f64> {
        let mut v = self
            .cells
            .get(&(row.to_string(), tool.to_string()))?
            .clone();
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    }
}

fn fmt(v: Option<f64>, unit: Unit) -> String {
    match (v, unit) {
        (None, _) => "-".into(),
        (Some(v), Unit::Seconds) => format!("{v:.2} s"),
        (Some(v), Unit::Mib) => format!("{v:.1} MiB"),
        (Some(v), Unit::MsPerSecond) => format!("{v:.3} ms/s"),
        (Some(v), Unit::PerSecond) => format!("{v:.2}/s"),
        (Some(v), Unit::Ms) => format!("{v:.0} ms"),
        (Some(v), Unit::Count) => format!("{v:.0}"),
        (Some(v), Unit::Ratio) => format!("{v:.2}x"),
    }
}

/// Runs `cmd` to its end (under `/usr/bin/time` for its peak memory); panics on failure.
pub fn timed(cmd: Command) -> Sample {
    let rss_file = std::env::temp_dir().join(format!("petrify-bench-rss-{}", std::process::id()));
    let mut run = Command::new("/usr/bin/time");
    run.args(["-f", "%M", "-o"])
        .arg(&rss_file)
        .arg(cmd.get_program());
    run.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => run.env(k, v),
            None => run.env_remove(k),
        };
    }
    run.stdout(Stdio::null()).stderr(Stdio::piped());
    settle();
    let start = Instant::now();
    let out = run.output().expect("run /usr/bin/time (apt install time)");
    let secs = start.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        cmd.get_program(),
        String::from_utf8_lossy(&out.stderr)
    );
    let rss = std::fs::read_to_string(&rss_file)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    Sample::time(secs).rss(rss)
}

/// A file of `size` pseudo-random bytes (incompressible, fast to make).
pub fn random_file(path: &Path, size: u64) {
    let mut f = File::create(path).expect("create the input");
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for w in buf.chunks_mut(8) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            w.copy_from_slice(&s.to_le_bytes()[..w.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).expect("write the input");
        left -= n as u64;
    }
    f.sync_all().expect("sync the input");
}

/// Writes every dirty page to disk, so that a timed run never shares the disk with the
/// writeback of the run before it (a peer's 1 GiB just stored by s3s-fs): without it the first
/// tool of a row, petrify, read its cold input while 2-3 GiB were being written out.
pub fn settle() {
    let ok = Command::new("sync").status().is_ok_and(|s| s.success());
    assert!(ok, "sync failed");
}

/// Puts `file` in the page cache (`cold == false`) or drops it from there, after [`settle`].
///
/// Cold, the file is read once before it is dropped, so that every tool starts from the same
/// state. On this VM the first read of a file in a while costs several times the CPU of the
/// next ones (1.5-1.7 s of system time per GiB at about 600 MB/s, then 0.06-0.2 s at 2-3 GB/s,
/// page cache dropped in between), and petrify, first in each row, was the one that paid it:
/// on a freshly written file, whichever of petrify and curl read it first took longer than
/// when it came second (curl 0.1 s, petrify 0.05-0.4 s).
pub fn cache(file: &Path, cold: bool) {
    settle();
    if cold {
        read_through(file);
        let ok = Command::new("dd")
            .arg(format!("if={}", file.display()))
            .args(["iflag=nocache", "count=0", "status=none"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "dd could not drop {} from the page cache",
            file.display()
        );
    } else {
        read_through(file);
    }
}

fn read_through(file: &Path) {
    let mut f = File::open(file).expect("open the input");
    std::io::copy(&mut f, &mut std::io::sink()).expect("read the input");
}

pub fn same_bytes(a: &Path, b: &Path) -> bool {
    let (Ok(mut a), Ok(mut b)) = (File::open(a), File::open(b)) else {
        return false;
    };
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = a.read(&mut x).unwrap_or(usize::MAX);
        if n == usize::MAX || b.read_exact(&mut y[..n]).is_err() {
            return false;
        }
        if x[..n] != y[..n] {
            return false;
        }
        if n == 0 {
            return b.read(&mut y).is_ok_and(|m| m == 0);
        }
    }
}

/// Peak resident memory of a running process.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time (ms, from the scheduler's nanosecond count) and context switches (each one a
/// wake-up or a preemption) of every thread of a running process.
pub fn cpu_and_switches(pid: u32) -> (f64, f64) {
    let mut cpu = 0.0;
    let mut switches = 0.0;
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0.0, 0.0);
    };
    for t in tasks.flatten() {
        let Ok(s) = std::fs::read_to_string(t.path().join("sched")) else {
            continue;
        };
        for l in s.lines() {
            let mut kv = l.split(':');
            let (Some(k), Some(v)) = (kv.next(), kv.next()) else {
                continue;
            };
            let v: f64 = v.trim().parse().unwrap_or(0.0);
            match k.trim() {
                "se.sum_exec_runtime" => cpu += v,
                "nr_switches" => switches += v,
                _ => {}
            }
        }
    }
    (cpu, switches)
}

/// Persist of a file growing at 1 MiB/s in 100 appends a second: CPU, memory, requests, and
/// the lag from each append to the upload that holds it being in the bucket.
pub fn steady(s3: &S3, work: &Scratch, dur: Duration, t: &mut Table) {
    let prefix = "steady";
    let _ = std::fs::remove_dir_all(s3.dir.path(crate::common::BUCKET).join(prefix));
    let file = work.path("steady.log");
    std::fs::write(&file, b"").expect("create the steady log");
    // The tests' HTTP proxy, without faults: it counts requests as HTTP, exactly.
    let counter = Proxy::start(s3.port, 1, 0.0);
    let mut cmd = s3.persist_cmd(&counter.endpoint(), prefix, &file, "1");
    cmd.env("RUST_LOG", "info");
    let p = spawn(cmd);
    wait_for("the generation's start", Duration::from_secs(30), || {
        s3.uploaded_end(prefix).is_some()
    });
    let (cpu0, _) = cpu_and_switches(p.pid());
    let req0 = counter.requests();
    let start = Instant::now();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .expect("open");
    let chunk = vec![b'x'; (1 << 20) / 100];
    let (mut appended, mut acked) = (Vec::new(), Vec::new());
    let mut end = 0u64;
    let mut tick = 0u64;
    while start.elapsed() < dur {
        tick += 1;
        f.write_all(&chunk).expect("append");
        end += chunk.len() as u64;
        appended.push((Instant::now(), end));
        // Watch the bucket between appends: 5 ms resolution for the lag.
        let next = start + Duration::from_millis(10 * tick);
        while Instant::now() < next {
            note_ack(s3, prefix, &mut acked);
            std::thread::sleep(
                Duration::from_millis(5).min(next.saturating_duration_since(Instant::now())),
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let (cpu1, _) = cpu_and_switches(p.pid());
    let requests = counter.requests() - req0;
    wait_for(
        "the last append in the bucket",
        Duration::from_secs(60),
        || {
            note_ack(s3, prefix, &mut acked);
            acked.last().is_some_and(|&(_, e)| e >= end)
        },
    );
    let rss = peak_rss_kib(p.pid());
    p.terminate(Duration::from_secs(30));
    let mut lags: Vec<f64> = appended
        .iter()
        .filter_map(|&(at, e)| {
            let (seen, _) = acked.iter().find(|&&(_, a)| a >= e)?;
            Some(seen.saturating_duration_since(at).as_secs_f64() * 1000.0)
        })
        .collect();
    lags.sort_by(f64::total_cmp);
    let pct = |q: f64| lags[((lags.len() - 1) as f64 * q) as usize];
    let row = "steady 1 MiB/s";
    t.add(
        &format!("{row}: CPU"),
        "petrify",
        Sample::of((cpu1 - cpu0) / secs, Unit::MsPerSecond),
    );
    t.add(
        &format!("{row}: requests"),
        "petrify",
        Sample::of(requests as f64 / secs, Unit::PerSecond),
    );
    t.add(
        &format!("{row}: lag, median"),
        "petrify",
        Sample::of(pct(0.5), Unit::Ms),
    );
    t.add(
        &format!("{row}: lag, p99"),
        "petrify",
        Sample::of(pct(0.99), Unit::Ms),
    );
    if let Some(kib) = rss {
        t.add(
            &format!("{row}: peak RSS"),
            "petrify",
            Sample::of(kib as f64 / 1024.0, Unit::Mib),
        );
    }
}

fn note_ack(s3: &S3, prefix: &str, acked: &mut Vec<(Instant, u64)>) {
    if let Some(e) = s3.uploaded_end(prefix)
        && acked.last().is_none_or(|&(_, a)| a < e)
    {
        acked.push((Instant::now(), e));
    }
}

/// Persist of a file nobody writes: CPU, wake-ups and requests over `dur`.
pub fn idle(s3: &S3, work: &Scratch, dur: Duration, t: &mut Table) {
    let prefix = "idle";
    let _ = std::fs::remove_dir_all(s3.dir.path(crate::common::BUCKET).join(prefix));
    let file = work.path("idle.log");
    std::fs::write(&file, b"some history\n").expect("create the idle log");
    let counter = Proxy::start(s3.port, 1, 0.0);
    let mut cmd = s3.persist_cmd(&counter.endpoint(), prefix, &file, "1");
    cmd.env("RUST_LOG", "info");
    let p = spawn(cmd);
    wait_for("the first upload", Duration::from_secs(30), || {
        s3.uploaded_end(prefix) == Some(13)
    });
    // Let the start's requests finish before counting.
    std::thread::sleep(Duration::from_secs(2));
    let (cpu0, sw0) = cpu_and_switches(p.pid());
    let req0 = counter.requests();
    std::thread::sleep(dur);
    let (cpu1, sw1) = cpu_and_switches(p.pid());
    let secs = dur.as_secs_f64();
    let requests = counter.requests() - req0;
    p.terminate(Duration::from_secs(30));
    t.add(
        "idle: CPU",
        "petrify",
        Sample::of((cpu1 - cpu0) / secs, Unit::MsPerSecond),
    );
    t.add(
        "idle: wake-ups",
        "petrify",
        Sample::of((sw1 - sw0) / secs, Unit::PerSecond),
    );
    t.add(
        "idle: requests",
        "petrify",
        Sample::of(requests as f64 / secs, Unit::PerSecond),
    );
}
