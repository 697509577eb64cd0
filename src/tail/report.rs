//! What persist tells the world besides its log: a Prometheus text file (`--metrics-file`, for
//! node_exporter's textfile collector), rewritten atomically after each poll, and a GET of a
//! dead-man's-switch URL (`--heartbeat-url`) at most once a minute while polls and uploads
//! succeed.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::s3::{ObjectStore, Pinger, REQUEST_KINDS};
use crate::timestamp;

/// How often the heartbeat URL is fetched, at most.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(60);

pub struct Report {
    metrics: Option<PathBuf>,
    metrics_failing: bool,
    heartbeat: Option<(Pinger, String)>,
    last_beat: Option<Instant>,
    heartbeat_failing: bool,
    /// Failed polls, by kind: S3, reading the file.
    errors: [u64; 2],
    last_upload_ms: Option<u64>,
    last_success_ms: Option<u64>,
    objects_then: u64,
    /// When persist was last caught up (nothing waiting after a successful poll).
    caught_up_at: Option<u64>,
    /// Until it has been: the newest recovery point of what persist resumed, or its start.
    /// Bytes waiting at a start were written after that, so their age is at most this.
    caught_up_before: u64,
}

/// What a poll left behind, for the report.
pub struct Seen {
    pub ok: bool,
    /// With `ok == false`: whether reading the file (not S3) failed.
    pub read_error: bool,
    pub objects: u64,
    pub bytes: u64,
    pub pending: u64,
}

impl Report {
    /// `caught_up_before`: the time of the newest recovery point persist resumed from, or now.
    pub fn new(
        metrics: Option<PathBuf>,
        heartbeat_url: Option<String>,
        caught_up_before: u64,
    ) -> Report {
        Report {
            metrics,
            metrics_failing: false,
            heartbeat: heartbeat_url.map(|u| (Pinger::new(), u)),
            last_beat: None,
            heartbeat_failing: false,
            errors: [0; 2],
            last_upload_ms: None,
            last_success_ms: None,
            objects_then: 0,
            caught_up_at: None,
            caught_up_before,
        }
    }

    /// After each poll.
    pub fn after_poll(&mut self, seen: &Seen, store: &dyn ObjectStore) {
        let now = timestamp::now_ms();
        if seen.ok {
            self.last_success_ms = Some(now);
            if seen.objects != self.objects_then {
                (self.last_upload_ms, self.objects_then) = (Some(now), seen.objects);
            }
            if seen.pending == 0 {
                self.caught_up_at = Some(now);
            }
            self.beat();
        } else {
            self.errors[usize::from(seen.read_error)] += 1;
        }
        if self.metrics.is_some() {
            let text = self.render(seen, store, now);
            self.write_metrics(&text);
        }
    }

    /// See `petrify_lag_seconds`.
    fn lag_s(&self, pending: u64, now: u64) -> f64 {
        match pending {
            0 => 0.0,
            _ => {
                let since = self.caught_up_at.unwrap_or(self.caught_up_before);
                now.saturating_sub(since) as f64 / 1000.0
            }
        }
    }

    fn beat(&mut self) {
        let Some((pinger, url)) = &self.heartbeat else {
            return;
        };
        if self
            .last_beat
            .is_some_and(|t| t.elapsed() < HEARTBEAT_EVERY)
        {
            return;
        }
        self.last_beat = Some(Instant::now());
        match pinger.ping(url) {
            Ok(()) if self.heartbeat_failing => {
                self.heartbeat_failing = false;
                log::info!("the heartbeat URL answers again");
            }
            Ok(()) => {}
            // Once per outage of the heartbeat service: it is not the backup.
            Err(why) if !self.heartbeat_failing => {
                self.heartbeat_failing = true;
                log::warn!("the heartbeat URL did not answer ({why}); the backup goes on");
            }
            Err(_) => {}
        }
    }

    /// The Prometheus text exposition format (version 0.0.4): HELP and TYPE before each family.
    fn render(&self, seen: &Seen, store: &dyn ObjectStore, now: u64) -> String {
        let secs = |ms: Option<u64>| ms.map_or(0.0, |m| m as f64 / 1000.0);
        let mut s = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(s, "{name}{labels} {v}");
            }
        };
        let one = |v: f64| vec![(String::new(), v)];
        family(
            "petrify_last_upload_timestamp_seconds",
            "gauge",
            "Unix time of the last upload S3 acknowledged (0: none since start).",
            &one(secs(self.last_upload_ms)),
        );
        family(
            "petrify_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the last poll that succeeded, uploads included.",
            &one(secs(self.last_success_ms)),
        );
        family(
            "petrify_lag_seconds",
            "gauge",
            "Age of the oldest byte of the followed file not in the bucket yet, at most: seconds \
             since persist last had nothing waiting, or since the newest recovery point when it \
             has not caught up since its start (0 when nothing waits).",
            &one(self.lag_s(seen.pending, now)),
        );
        family(
            "petrify_pending_bytes",
            "gauge",
            "Bytes of the followed file not uploaded yet.",
            &one(seen.pending as f64),
        );
        family(
            "petrify_uploaded_bytes_total",
            "counter",
            "Bytes uploaded since start.",
            &one(seen.bytes as f64),
        );
        family(
            "petrify_uploaded_objects_total",
            "counter",
            "Objects uploaded since start.",
            &one(seen.objects as f64),
        );
        let sent = store.requests_sent();
        let by_kind: Vec<(String, f64)> = REQUEST_KINDS
            .iter()
            .zip(sent)
            .map(|(k, n)| (format!("{{kind=\"{k}\"}}"), n as f64))
            .collect();
        family(
            "petrify_requests_total",
            "counter",
            "Requests sent to S3 since start, by kind.",
            &by_kind,
        );
        family(
            "petrify_poll_errors_total",
            "counter",
            "Polls that failed since start, by kind (s3: a request; read: the followed file).",
            &[
                ("{kind=\"s3\"}".to_string(), self.errors[0] as f64),
                ("{kind=\"read\"}".to_string(), self.errors[1] as f64),
            ],
        );
        s
    }

    /// Write beside, then rename: the collector never reads half a file. A failure is said
    /// once at WARN until a write succeeds again (it is not the backup).
    fn write_metrics(&mut self, text: &str) {
        let Some(path) = &self.metrics else {
            return;
        };
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        match std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path)) {
            Ok(()) => self.metrics_failing = false,
            Err(e) if !self.metrics_failing => {
                self.metrics_failing = true;
                log::warn!("cannot write the metrics file {}: {e}", path.display());
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Restarted with bytes waiting and every upload failing: the lag counts from the newest
    /// point in the bucket, not from zero.
    #[test]
    fn lag_is_the_age_of_what_waits() {
        let mut r = Report::new(None, None, 1_000_000);
        assert_eq!(r.lag_s(0, 1_060_000), 0.0);
        assert_eq!(r.lag_s(5, 1_060_000), 60.0);
        r.caught_up_at = Some(1_050_000);
        assert_eq!(r.lag_s(5, 1_060_000), 10.0);
    }
}
