//! systemd's notify protocol (sd_notify(3)) in a few lines of std: `READY=1` once persist has
//! resumed its chain and a first poll succeeded, `WATCHDOG=1` while polls and uploads succeed
//! (so a persist stuck for longer than `WatchdogSec=` is restarted), `STATUS=` for
//! `systemctl status`, `STOPPING=1` at a stop. Without `NOTIFY_SOCKET` it does nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

pub struct Notifier {
    socket: UnixDatagram,
    to: SocketAddr,
    /// Half of `WATCHDOG_USEC`: how often a healthy persist says so.
    ping_every: Option<Duration>,
    last_ping: Option<Instant>,
    last_status: String,
    ready: bool,
}

impl Notifier {
    /// From the environment systemd gives a `Type=notify` service; `None` outside one.
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var("NOTIFY_SOCKET").ok()?;
        let to = match path.strip_prefix('@') {
            Some(name) => abstract_addr(name)?,
            None => SocketAddr::from_pathname(&path).ok()?,
        };
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let ping_every = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && for_us)
            .map(|u| Duration::from_micros(u) / 2);
        let socket = UnixDatagram::unbound().ok()?;
        Some(Notifier {
            socket,
            to,
            ping_every,
            last_ping: None,
            last_status: String::new(),
            ready: false,
        })
    }

    /// A poll and its uploads succeeded: ready (the first time), alive (when the watchdog is due),
    /// and the status line when it changed.
    pub fn healthy(&mut self, status: &str) {
        let mut msg = String::new();
        if !self.ready {
            self.ready = true;
            msg.push_str("READY=1\n");
        }
        if let Some(every) = self.ping_every
            && self.last_ping.is_none_or(|t| t.elapsed() >= every)
        {
            self.last_ping = Some(Instant::now());
            msg.push_str("WATCHDOG=1\n");
        }
        if status != self.last_status || !msg.is_empty() {
            self.last_status = status.to_string();
            msg.push_str(&format!("STATUS={status}\n"));
        }
        self.send(&msg);
    }

    /// Something failed: the status says so; no watchdog ping until it passes.
    pub fn failing(&mut self, status: &str) {
        if status != self.last_status {
            self.last_status = status.to_string();
            self.send(&format!("STATUS={status}\n"));
        }
    }

    pub fn stopping(&mut self) {
        self.send("STOPPING=1\nSTATUS=stopping: uploading what is pending\n");
    }

    fn send(&self, msg: &str) {
        if msg.is_empty() {
            return;
        }
        if let Err(e) = self.socket.send_to_addr(msg.as_bytes(), &self.to) {
            log::debug!("could not notify systemd: {e}");
        }
    }
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &str) -> Option<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name.as_bytes()).ok()
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(_: &str) -> Option<SocketAddr> {
    None
}
