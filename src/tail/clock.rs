//! Observation times for recovery points: Unix milliseconds from the host's clock, strictly
//! increasing within a generation, and what to do when the clock goes back.

use std::time::Duration;

/// A step back of the clock smaller than this is waited out; a larger one starts a new
/// generation (see [`Clock::check`]).
pub const CLOCK_STEP_TOLERANCE_MS: u64 = 1000;

/// Hands out observation times: Unix milliseconds, strictly increasing within a generation, so
/// that every recovery point has its own time and a chain's order is its times' order.
pub struct Clock {
    last_ms: u64,
}

/// What [`Clock::check`] makes of the time now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockCheck {
    /// Later than every time handed out: use it.
    Ok,
    /// Slightly earlier (a small step back, or several points within one millisecond): wait
    /// this long rather than label a point with a time that has not come yet.
    Wait(Duration),
    /// The clock went back by this many milliseconds: a new generation must start, on the true
    /// clock (generations are ordered by number, so its earlier times shadow nothing).
    SteppedBack(u64),
}

impl Clock {
    pub fn after(last_ms: u64) -> Clock {
        Clock { last_ms }
    }

    /// Whether `now_ms` can label the next point of the current generation.
    pub fn check(&self, now_ms: u64) -> ClockCheck {
        if now_ms > self.last_ms {
            ClockCheck::Ok
        } else if self.last_ms - now_ms < CLOCK_STEP_TOLERANCE_MS {
            ClockCheck::Wait(Duration::from_millis(self.last_ms - now_ms + 1))
        } else {
            ClockCheck::SteppedBack(self.last_ms - now_ms)
        }
    }

    /// A new generation starts at `now_ms`: if the clock went back, its times restart from the
    /// true clock (said at WARN) instead of continuing from times that have not come yet.
    pub fn start_generation(&mut self, now_ms: u64) {
        if let ClockCheck::SteppedBack(by) = self.check(now_ms) {
            log::warn!(
                "the clock went back: it is {:.3}s behind the last recovery point's time (it was \
                 ahead and has been set right?); the new generation's points carry true times",
                by as f64 / 1000.0
            );
            self.last_ms = 0;
        }
    }

    /// The last time given out: every object stored so far is at or before it.
    pub fn last(&self) -> u64 {
        self.last_ms
    }

    /// A time no earlier than `ms` (a file's modification time, say), still strictly after every
    /// time handed out before.
    pub fn at_least(&mut self, ms: u64) -> u64 {
        self.last_ms = ms.max(self.last_ms + 1);
        self.last_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timestamp;

    #[test]
    fn clock_is_strictly_increasing() {
        let far = timestamp::now_ms() + 1_000_000;
        let mut c = Clock::after(far);
        assert_eq!(c.at_least(5), far + 1);
        assert_eq!(c.at_least(far), far + 2);
        assert_eq!(c.at_least(far + 10), far + 10);
    }

    #[test]
    fn a_step_back_is_waited_out_or_starts_a_generation() {
        let c = Clock::after(10_000);
        assert_eq!(c.check(10_001), ClockCheck::Ok);
        assert_eq!(c.check(10_000), ClockCheck::Wait(Duration::from_millis(1)));
        assert_eq!(c.check(9_500), ClockCheck::Wait(Duration::from_millis(501)));
        assert_eq!(c.check(9_000), ClockCheck::SteppedBack(1_000));
        let mut c = Clock::after(10_000);
        c.start_generation(5_000);
        assert_eq!(c.at_least(5_000), 5_000);
        let mut c = Clock::after(10_000);
        c.start_generation(9_500); // a small step: times stay increasing
        assert_eq!(c.at_least(9_500), 10_001);
    }
}
