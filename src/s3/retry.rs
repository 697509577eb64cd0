//! Retrying what failed transiently: capped exponential backoff with full jitter, and a
//! bounded retry of idempotent requests.

use std::time::{Duration, Instant};

use super::S3Error;

/// Capped exponential backoff with full jitter.
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
    seed: u64,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ (u64::from(std::process::id()) << 32);
        Backoff {
            base,
            cap,
            failures: 0,
            seed: seed | 1,
        }
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The delay before the next attempt, after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = self
            .base
            .saturating_mul(1u32 << self.failures.min(16))
            .min(self.cap);
        // xorshift64: jitter only, not security.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let frac = (self.seed % 1000) as f64 / 1000.0;
        // Between half and all of the exponential delay, so retries never bunch at zero.
        exp.mul_f64(0.5 + frac / 2.0)
    }
}

/// Runs an idempotent request up to `attempts` times while it fails transiently.
pub fn retry<T>(attempts: u32, mut op: impl FnMut() -> Result<T, S3Error>) -> Result<T, S3Error> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let started = Instant::now();
    loop {
        match op() {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && backoff.failures() + 1 < attempts => {
                let d = backoff.next_delay();
                log::debug!(
                    "{e}; retrying in {:.1}s (attempt {} after {:.1}s)",
                    d.as_secs_f64(),
                    backoff.failures() + 1,
                    started.elapsed().as_secs_f64()
                );
                std::thread::sleep(d);
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let d: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(100) && d[0] <= Duration::from_millis(200));
        for x in &d {
            assert!(*x <= Duration::from_secs(2));
        }
        assert!(d[11] >= Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(200));
    }

    #[test]
    fn retry_stops_on_permanent_errors_and_gives_up_after_attempts() {
        let mut n = 0;
        let r: Result<(), _> = retry(3, || {
            n += 1;
            Err(S3Error::Status {
                status: 403,
                code: None,
                message: None,
                skew_s: None,
                region: None,
            })
        });
        assert!(r.is_err());
        assert_eq!(n, 1);
        let mut n = 0;
        let r: Result<(), _> = retry(3, || {
            n += 1;
            Err(S3Error::Network("refused".into()))
        });
        assert!(r.is_err());
        assert_eq!(n, 3);
    }
}
