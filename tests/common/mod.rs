//! Test harness: a real s3s-fs server process on a free loopback port, the real petrify binary,
//! and helpers that poll for conditions instead of sleeping. Every process started here is
//! stopped by PID when its guard drops.
#![allow(dead_code)]

pub mod proxy;

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "PETRIFYTESTKEY";
pub const SECRET_KEY: &str = "petrify-test-secret-0123456789";
pub const BUCKET: &str = "bkt";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A scratch folder removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!(
            "petrify-test-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (SIGKILL) and reaped on drop if still running. Its stderr, when
/// piped, is collected by a thread so that tests can wait for a log line.
pub struct Proc {
    pub child: Child,
    pub name: String,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Proc {
    pub fn new(mut child: Child, name: &str) -> Proc {
        let log = Arc::new(Mutex::new(String::new()));
        let reader = child.stderr.take().map(|stderr| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            })
        });
        Proc {
            child,
            name: name.to_string(),
            log,
            reader,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the collected stderr contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        wait_for(
            &format!("{:?} in the log of {}", needle, self.name),
            timeout,
            || self.log().contains(needle),
        );
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status();
    }

    /// SIGTERM, then wait for the exit (at most `timeout`).
    pub fn terminate(mut self, timeout: Duration) -> Exited {
        self.signal("TERM");
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                self.signal("KILL");
                panic!("{} did not stop within {timeout:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.finish()
    }

    /// Waits for the process to exit by itself (at most `timeout`, then SIGKILL and panic).
    pub fn wait_exit(mut self, timeout: Duration) -> Exited {
        let deadline = Instant::now() + timeout;
        while !matches!(self.child.try_wait(), Ok(Some(_))) {
            if Instant::now() > deadline {
                self.signal("KILL");
                panic!("{} did not exit within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.finish()
    }

    /// SIGKILL now (a crash), and reap.
    pub fn kill(mut self) -> Exited {
        let _ = self.child.kill();
        self.finish()
    }

    fn finish(&mut self) -> Exited {
        let status = self.child.wait().expect("wait");
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        Exited {
            status,
            stderr: self.log(),
        }
    }
}

/// How a background process ended.
pub struct Exited {
    pub status: ExitStatus,
    pub stderr: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An s3s-fs server on a free port, serving `dir`; buckets are folders in it.
pub struct S3 {
    pub proc: Option<Proc>,
    pub port: u16,
    pub dir: Scratch,
}

impl S3 {
    pub fn start() -> S3 {
        let dir = Scratch::new("s3");
        std::fs::create_dir_all(dir.path(BUCKET)).unwrap();
        let port = free_port();
        let mut s3 = S3 {
            proc: None,
            port,
            dir,
        };
        s3.restart();
        s3
    }

    /// Starts the server (again) on the same port and folder.
    pub fn restart(&mut self) {
        let child = Command::new(s3s_fs())
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--access-key",
                ACCESS_KEY,
                "--secret-key",
                SECRET_KEY,
            ])
            .arg(&self.dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start s3s-fs: run .ci/run or `cargo install s3s-fs@0.14.1 --features binary --locked`");
        self.proc = Some(Proc::new(child, "s3s-fs"));
        let port = self.port;
        wait_for("s3s-fs to listen", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    pub fn stop(&mut self) {
        if let Some(p) = self.proc.take() {
            p.kill();
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The object keys under `prefix/petrify-v1/`, relative to it, sorted; read from the
    /// server's folder (the test's view of the bucket, independent of petrify's listing code).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let root = self.dir.path(BUCKET).join(prefix).join("petrify-v1");
        let mut out = Vec::new();
        walk(&root, &root, &mut out);
        out.retain(|k| k != "writer.lease");
        out.sort();
        out
    }

    /// Appends `data` to `path`, waits until the bucket holds the file up to its new end, and
    /// returns the file's content.
    pub fn append_and_wait(&self, prefix: &str, path: &Path, data: &[u8]) -> Vec<u8> {
        append(path, data);
        let content = std::fs::read(path).unwrap();
        let len = content.len() as u64;
        wait_for(
            "the append to reach the bucket",
            Duration::from_secs(30),
            || self.uploaded_end(prefix) == Some(len),
        );
        content
    }

    /// Whether a persist holds the prefix's writer lease.
    pub fn has_lease(&self, prefix: &str) -> bool {
        self.object_path(prefix, "writer.lease").exists()
    }

    /// Path of an object's bytes on the server's disk.
    pub fn object_path(&self, prefix: &str, rel: &str) -> PathBuf {
        self.dir
            .path(BUCKET)
            .join(prefix)
            .join("petrify-v1")
            .join(rel)
    }

    /// Parsed (generation, part, start, end) of every object.
    pub fn ranges(&self, prefix: &str) -> Vec<Obj> {
        self.keys(prefix)
            .iter()
            .filter_map(|k| Obj::parse(k))
            .collect()
    }

    /// The highest end offset uploaded for the newest generation's `part`.
    pub fn uploaded_end(&self, prefix: &str) -> Option<u64> {
        let objs = self.ranges(prefix);
        let g = objs.iter().map(|o| o.generation).max()?;
        objs.iter()
            .filter(|o| o.generation == g)
            .map(|o| o.end)
            .max()
    }

    /// A petrify command with this server's endpoint and credentials.
    pub fn petrify(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_petrify"));
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                c.env_remove(k);
            }
        }
        c.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_ENDPOINT_URL", self.endpoint())
            .env("AWS_REGION", "us-east-1")
            .env("RUST_LOG", "debug");
        c
    }

    /// Runs a petrify command to its end.
    pub fn run(&self, args: &[&str]) -> Output {
        self.petrify().args(args).output().expect("run petrify")
    }

    /// Starts `petrify persist` in the background.
    pub fn persist(&self, prefix: &str, file: &Path, interval: &str) -> Proc {
        self.persist_via(&self.endpoint(), prefix, file, interval)
    }

    /// Starts `petrify persist` in the background, talking to `endpoint` (a proxy).
    pub fn persist_via(&self, endpoint: &str, prefix: &str, file: &Path, interval: &str) -> Proc {
        spawn(self.persist_cmd(endpoint, prefix, file, interval))
    }

    /// The `petrify persist` command line, for a test to add to before [`spawn`]ing it.
    pub fn persist_cmd(
        &self,
        endpoint: &str,
        prefix: &str,
        file: &Path,
        interval: &str,
    ) -> Command {
        let mut c = self.petrify();
        c.env("AWS_ENDPOINT_URL", endpoint)
            .args([
                "persist",
                "--bucket",
                BUCKET,
                "--prefix",
                prefix,
                "--interval",
                interval,
            ])
            .arg("--file")
            .arg(file);
        c
    }

    pub fn recover(&self, prefix: &str, file: &Path, extra: &[&str]) -> Output {
        self.petrify()
            .args(["recover", "--bucket", BUCKET, "--prefix", prefix])
            .arg("--file")
            .arg(file)
            .args(extra)
            .output()
            .expect("run petrify recover")
    }

    /// `petrify list`, parsed: (unix-ms, generation, bytes) per line.
    pub fn list(&self, prefix: &str) -> Vec<Point> {
        let out = self.run(&["list", "--bucket", BUCKET, "--prefix", prefix]);
        assert!(out.status.success(), "list failed: {}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                assert_eq!(f.len(), 4, "list line {l:?}");
                Point {
                    rfc3339: f[0].to_string(),
                    unix: f[1].to_string(),
                    generation: f[2].parse().unwrap(),
                    bytes: f[3].parse().unwrap(),
                }
            })
            .collect()
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    pub rfc3339: String,
    pub unix: String,
    pub generation: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Obj {
    pub key: String,
    pub generation: u64,
    pub part: String,
    pub start: u64,
    pub end: u64,
    pub time_ms: u64,
}

impl Obj {
    /// An object key below `petrify-v1/`; `None` for anything else (the writer lease, planted
    /// foreign keys).
    pub fn parse(k: &str) -> Option<Obj> {
        let segs: Vec<&str> = k.split('/').collect();
        if segs.len() != 3 {
            return None;
        }
        let generation = segs[0].get(..10)?.parse().ok()?;
        let mut fields = segs[2].split('.');
        let range = fields.next()?;
        let time_ms = fields.next()?.parse().ok()?;
        let (s, e) = range.split_once('-')?;
        Some(Obj {
            key: k.to_string(),
            generation,
            part: segs[1].to_string(),
            start: s.parse().ok()?,
            end: e.parse().ok()?,
            time_ms,
        })
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(root, &p, out);
        } else if let Ok(rel) = p.strip_prefix(root) {
            let rel = rel.to_string_lossy().into_owned();
            // s3s-fs keeps upload scratch files beside objects
            if !rel.contains(".tmp") {
                out.push(rel);
            }
        }
    }
}

pub fn s3s_fs() -> PathBuf {
    if let Ok(p) = std::env::var("S3S_FS") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cargo_bin = Path::new(&home).join(".cargo/bin/s3s-fs");
    if cargo_bin.exists() {
        cargo_bin
    } else {
        PathBuf::from("s3s-fs")
    }
}

/// Polls `cond` every 10 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn append(path: &Path, data: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(data).unwrap();
}

/// Asserts a failed run: the exit status, one line on stderr containing `needle`, no panic.
pub fn assert_fails(out: &Output, code: i32, needle: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("petrify: error: "), "stderr: {err}");
    assert!(last.contains(needle), "expected {needle:?} in {last:?}");
    assert!(!err.contains("panicked"), "panic: {err}");
}

/// stderr as text, for both finished commands and stopped background processes.
pub trait Stderr {
    fn err(&self) -> String;
}

impl Stderr for Output {
    fn err(&self) -> String {
        text(&self.stderr)
    }
}

impl Stderr for Exited {
    fn err(&self) -> String {
        self.stderr.clone()
    }
}

/// A real redis-server in AOF mode on a free port, its data in `dir`; killed on drop.
pub struct Redis {
    pub proc: Option<Proc>,
    pub port: u16,
    pub dir: PathBuf,
}

impl Redis {
    pub fn start(dir: &Path) -> Redis {
        Redis::start_with(dir, &[])
    }

    pub fn start_with(dir: &Path, extra: &[&str]) -> Redis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start redis-server: run .ci/run (apt-get install redis-server)");
        let r = Redis {
            proc: Some(Proc::new(child, "redis-server")),
            port,
            dir: dir.to_path_buf(),
        };
        wait_for("redis-server to answer", Duration::from_secs(10), || {
            r.try_cli(&["PING"]).is_some_and(|o| o.trim() == "PONG")
        });
        r
    }

    pub fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        out.status.success().then(|| text(&out.stdout))
    }

    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args).expect("redis-cli failed")
    }

    /// The dataset, sorted: (key, value) for every string key.
    pub fn dataset(&self) -> Vec<(String, String)> {
        let mut keys: Vec<String> = self
            .cli(&["--raw", "KEYS", "*"])
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        keys.sort();
        keys.into_iter()
            .map(|k| {
                let v = self.cli(&["--raw", "GET", &k]).trim_end().to_string();
                (k, v)
            })
            .collect()
    }

    /// SHUTDOWN (the AOF is fsynced), then reap.
    pub fn stop(&mut self) {
        let _ = self.try_cli(&["SHUTDOWN"]);
        if let Some(mut p) = self.proc.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !matches!(p.child.try_wait(), Ok(Some(_))) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            p.kill();
        }
    }

    pub fn wait_rewrite_done(&self) {
        wait_for("BGREWRITEAOF to finish", Duration::from_secs(30), || {
            let info = self.cli(&["INFO", "persistence"]);
            info.contains("aof_rewrite_in_progress:0") && info.contains("aof_rewrite_scheduled:0")
        });
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(p) = self.proc.take() {
            p.kill();
        }
    }
}

/// The live files of a Redis 7 AOF folder and their lengths, per its manifest.
pub fn aof_files(dir: &Path) -> Vec<(String, u64)> {
    let Ok(m) = std::fs::read_to_string(dir.join("appendonly.aof.manifest")) else {
        return Vec::new();
    };
    m.lines()
        .filter(|l| !l.ends_with("type h"))
        .filter_map(|l| l.split_whitespace().nth(1).map(String::from))
        .map(|name| {
            let len = std::fs::metadata(dir.join(&name))
                .map(|m| m.len())
                .unwrap_or(0);
            (name, len)
        })
        .collect()
}

impl S3 {
    /// Whether the bucket's newest generation holds every live file of `dir` at its current
    /// length, and a manifest.
    pub fn folder_synced(&self, prefix: &str, dir: &Path) -> bool {
        let files = aof_files(dir);
        if files.is_empty() {
            return false;
        }
        let objs = self.ranges(prefix);
        let Some(g) = objs.iter().map(|o| o.generation).max() else {
            return false;
        };
        let in_gen: Vec<&Obj> = objs.iter().filter(|o| o.generation == g).collect();
        in_gen.iter().any(|o| o.part.ends_with(".manifest"))
            && files.iter().all(|(name, len)| {
                in_gen
                    .iter()
                    .filter(|o| &o.part == name)
                    .map(|o| o.end)
                    .max()
                    == Some(*len)
            })
    }
}

/// A minimal RESP client, for loads and checks that would take thousands of redis-cli runs.
pub struct Resp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<String>),
    Array(Vec<Reply>),
}

impl Resp {
    pub fn connect(port: u16) -> Resp {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Resp {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    pub fn send(&mut self, args: &[&str]) {
        use std::io::Write;
        let mut cmd = format!("*{}\r\n", args.len());
        for a in args {
            cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.writer.write_all(cmd.as_bytes()).unwrap();
    }

    pub fn call(&mut self, args: &[&str]) -> Reply {
        self.send(args);
        self.read()
    }

    pub fn read(&mut self) -> Reply {
        use std::io::Read;
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        let (tag, rest) = line.split_at(1);
        match tag {
            "+" => Reply::Simple(rest.into()),
            "-" => Reply::Error(rest.into()),
            ":" => Reply::Int(rest.parse().unwrap()),
            "$" => {
                let n: i64 = rest.parse().unwrap();
                if n < 0 {
                    return Reply::Bulk(None);
                }
                let mut buf = vec![0; n as usize + 2];
                self.reader.read_exact(&mut buf).unwrap();
                buf.truncate(n as usize);
                Reply::Bulk(Some(String::from_utf8(buf).unwrap()))
            }
            "*" => {
                let n: i64 = rest.parse().unwrap();
                Reply::Array((0..n.max(0)).map(|_| self.read()).collect())
            }
            other => panic!("unexpected RESP {other:?}"),
        }
    }

    /// Every key and its string value, sorted by key.
    pub fn dataset(&mut self) -> Vec<(String, String)> {
        let Reply::Array(keys) = self.call(&["KEYS", "*"]) else {
            panic!("KEYS failed")
        };
        let mut keys: Vec<String> = keys
            .into_iter()
            .filter_map(|k| match k {
                Reply::Bulk(Some(k)) => Some(k),
                _ => None,
            })
            .collect();
        keys.sort();
        if keys.is_empty() {
            return Vec::new();
        }
        let mut args = vec!["MGET"];
        args.extend(keys.iter().map(String::as_str));
        let Reply::Array(vals) = self.call(&args) else {
            panic!("MGET failed")
        };
        keys.into_iter()
            .zip(vals)
            .map(|(k, v)| match v {
                Reply::Bulk(Some(v)) => (k, v),
                other => panic!("{k}: {other:?}"),
            })
            .collect()
    }
}

/// Unix time in milliseconds, as a float (sub-millisecond precision).
pub fn now_ms_f() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

/// Seeded xorshift: deterministic "random" moments and choices in tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Starts a petrify command in the background, its stderr collected (see [`Proc::wait_log`]).
pub fn spawn(mut cmd: Command) -> Proc {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn petrify");
    Proc::new(child, "petrify persist")
}
