//! One line of progress on a terminal during a long recovery: bytes, objects, rate, time left,
//! redrawn a few times a second on standard error. Nothing when standard error is not a
//! terminal (a log, the journal, a pipe), so that logs stay one line per event.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const REDRAW: Duration = Duration::from_millis(250);

pub struct Progress {
    total: u64,
    state: Option<Mutex<State>>,
}

struct State {
    started: Instant,
    drawn: Option<Instant>,
    bytes: u64,
    objects: u64,
}

impl Progress {
    /// For `total` bytes; drawn only if standard error is a terminal.
    pub fn new(total: u64) -> Progress {
        let state = std::io::stderr().is_terminal().then(|| {
            Mutex::new(State {
                started: Instant::now(),
                drawn: None,
                bytes: 0,
                objects: 0,
            })
        });
        Progress { total, state }
    }

    /// Nothing is ever drawn.
    #[cfg(test)]
    pub fn none() -> Progress {
        Progress {
            total: 0,
            state: None,
        }
    }

    /// One more piece written: `bytes`, and whether it completed an object.
    pub fn add(&self, bytes: u64, object_done: bool) {
        let Some(Ok(mut s)) = self.state.as_ref().map(|m| m.lock()) else {
            return;
        };
        s.bytes += bytes;
        s.objects += u64::from(object_done);
        if s.drawn.is_some_and(|t| t.elapsed() < REDRAW) {
            return;
        }
        s.drawn = Some(Instant::now());
        let secs = s.started.elapsed().as_secs_f64().max(0.001);
        let rate = s.bytes as f64 / secs;
        let left = self.total.saturating_sub(s.bytes) as f64 / rate.max(1.0);
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        eprint!(
            "\r\x1b[2Krecovering: {:.1} of {:.1} MiB, {} objects, {:.1} MiB/s, {:.0} s left",
            mib(s.bytes),
            mib(self.total),
            s.objects,
            rate / (1 << 20) as f64,
            left
        );
        let _ = std::io::stderr().flush();
    }

    /// Clears the line, before the final log line or an error. Once is enough.
    pub fn finish(&self) {
        if let Some(Ok(mut s)) = self.state.as_ref().map(|m| m.lock())
            && s.drawn.take().is_some()
        {
            eprint!("\r\x1b[2K");
        }
    }
}
