//! Processes and scratch space: free ports, scratch folders, child processes stopped by PID
//! when their guard drops (stderr collected for log assertions), and polling instead of
//! sleeping.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// Whether a server listens on loopback `port`. A connection whose two ends are the same
/// address is the kernel's simultaneous open onto itself, not a server: a tight poll of a port
/// inside the ephemeral range meets it now and then, and took a CI run down once.
pub fn listening(port: u16) -> bool {
    match TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => match (s.local_addr(), s.peer_addr()) {
            (Ok(local), Ok(peer)) => local != peer,
            _ => false,
        },
        Err(_) => false,
    }
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
