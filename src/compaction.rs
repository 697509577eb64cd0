//! Compaction decisions: when persist merges the objects of a part into one, and how the merged
//! object is put together. Pure functions over times and sizes; `tail::compaction` carries them out.
//!
//! The policy: `--compaction SPANS` lists window lengths, each a multiple of the one before
//! (`5s,20s,1m` ...), windows aligned to the Unix epoch, so that each window of a span is made of
//! whole windows of the spans below it. When a new point is the first in a window of some span
//! (the newest point held was in an earlier one), the upload that carries it also carries every
//! held object whose first point is in the window of the largest such span that just ended:
//! one object replaces them, with an index that keeps each point's end, time and CRC. The
//! merge rides on an upload that is made anyway, so it costs no extra request unless bytes are
//! copied server-side (see [`plan_parts`]).
//!
//! What it bounds: the objects any point needs are at most the objects of the current window of
//! each span, plus one per window of the largest span. With the default spans and one point a
//! second, that is at most 4 deltas, 3+2+4+3+2+3+2+3 merged objects below 8 days, and one per 8
//! days: 31 objects for a generation that ran 30 days (issue #9 asks for 40 at most).

use std::fmt;
use std::time::Duration;

/// The spans unless `--compaction` says otherwise.
pub const DEFAULT_SPANS: &str = "5s,20s,1m,5m,20m,1h,4h,12h,2d,8d";

/// AWS's smallest part of a multipart upload, the last one excepted (`EntityTooSmall`). Inputs
/// this large are copied by the store (UploadPartCopy) instead of sent again.
pub const PART_MIN: u64 = 5 << 20;
/// AWS's largest part (and largest single PUT).
pub const PART_MAX: u64 = 5 << 30;
/// A delta larger than this (a catch-up after an outage, a large first upload) is copied
/// rather than sent again at its first merge.
pub const SEND_AT_MOST: u64 = 64 << 20;

/// The window lengths, in milliseconds, smallest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spans(pub Vec<u64>);

impl Spans {
    /// Parses `off` or a comma-separated list of `N` + `ms`, `s`, `m`, `h` or `d` (`ms` for
    /// tests and simulations). `None`: off. The words of an error say what to give.
    pub fn parse(s: &str) -> Result<Option<Spans>, String> {
        if s == "off" {
            return Ok(None);
        }
        let mut out: Vec<u64> = Vec::new();
        for word in s.split(',') {
            let bad = || {
                format!(
                    "--compaction {s:?}: {word:?} is not a span; give `off` or spans like \
                     5s,1m,1h,1d, each a multiple of the one before"
                )
            };
            let (digits, unit) = match word.strip_suffix("ms") {
                Some(d) => (d, 1),
                None => match word.chars().last() {
                    Some('s') => (&word[..word.len() - 1], 1_000),
                    Some('m') => (&word[..word.len() - 1], 60_000),
                    Some('h') => (&word[..word.len() - 1], 3_600_000),
                    Some('d') => (&word[..word.len() - 1], 86_400_000),
                    _ => return Err(bad()),
                },
            };
            let n: u64 = digits.parse().map_err(|_| bad())?;
            let ms = n
                .checked_mul(unit)
                .filter(|ms| (10..=366 * 86_400_000).contains(ms))
                .ok_or_else(bad)?;
            if let Some(&last) = out.last()
                && (ms <= last || ms % last != 0)
            {
                return Err(format!(
                    "--compaction {s:?}: each span must be a multiple of the one before and \
                     longer ({word} after {})",
                    Spans(vec![last])
                ));
            }
            out.push(ms);
        }
        if out.len() > 16 {
            return Err(format!("--compaction {s:?}: at most 16 spans"));
        }
        Ok(Some(Spans(out)))
    }

    /// `--compaction` as given (`None`: the default) for a polling interval, or what is wrong
    /// with it.
    pub fn choose(given: Option<&str>, interval: Duration) -> Result<Option<Spans>, String> {
        let Some(v) = given else {
            return Ok(Spans::default_for(interval));
        };
        match Spans::parse(v)? {
            // A span of less than two intervals would merge at every upload.
            Some(s) if s.0[0] < 2 * interval.as_millis() as u64 => Err(format!(
                "--compaction {v:?}: the smallest span must be at least two intervals ({} s)",
                (interval * 2).as_secs_f64()
            )),
            spans => Ok(spans),
        }
    }

    /// The default spans for a polling interval: those at least two intervals long (a span
    /// shorter than that would merge at every upload).
    pub fn default_for(interval: Duration) -> Option<Spans> {
        let min = 2 * interval.as_millis() as u64;
        let spans: Vec<u64> = Spans::parse(DEFAULT_SPANS)
            .ok()
            .flatten()
            .map(|s| s.0)
            .unwrap_or_default()
            .into_iter()
            .filter(|&ms| ms >= min)
            .collect();
        (!spans.is_empty()).then_some(Spans(spans))
    }
}

impl fmt::Display for Spans {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &ms) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let (n, u) = [
                (86_400_000, "d"),
                (3_600_000, "h"),
                (60_000, "m"),
                (1_000, "s"),
            ]
            .into_iter()
            .find(|(unit, _)| ms % unit == 0)
            .map_or((ms, "ms"), |(unit, u)| (ms / unit, u));
            write!(f, "{n}{u}")?;
        }
        Ok(())
    }
}

/// Which held objects the upload of a new point at `now_ms` merges with. `first_ms`: each held
/// object's first point time, in chain order; `last_ms`: the newest held point's time.
/// `Some(i)`: objects `i..` and the new bytes become one object. `None`: a plain delta.
pub fn merge_from(first_ms: &[u64], last_ms: u64, now_ms: u64, spans: &Spans) -> Option<usize> {
    for &span in spans.0.iter().rev() {
        if last_ms / span == now_ms / span {
            continue;
        }
        // The largest span whose window the new point leaves behind: merge what that window
        // held (objects of earlier windows, merged already, stay as they are).
        let window_start = last_ms / span * span;
        let i = first_ms.partition_point(|&t| t < window_start);
        return (i < first_ms.len()).then_some(i);
    }
    None
}

/// One part of a merged object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Bytes `[from, to)` of input `input`, copied by the store.
    Copy { input: usize, from: u64, to: u64 },
    /// Inputs `first..end` (whole), read from the followed file and sent; the last part also
    /// carries the new bytes and the index.
    Send { first: usize, end: usize },
}

/// How to put a merged object together from `inputs` (their lengths, and whether each may be
/// copied), in order, followed by new bytes and the index (always in the last part, which is
/// a `Send`). Copyable inputs of [`PART_MIN`] or more are copied by the store, the rest sent
/// from the file; a sent run that is not the last part and is shorter than [`PART_MIN`] takes
/// in the inputs after it until it is not, so that no part but the last is under AWS's
/// minimum. A single `Send` means one PUT.
///
/// The caller says a delta may not be copied unless it is very large ([`SEND_AT_MOST`]): a
/// delta's bytes are sent a second time at its first merge, and only copied after that, so a
/// busy log's bytes cross the network twice at most, and a merge of plain deltas costs no
/// request beyond the upload it rides on.
pub fn plan_parts(inputs: &[(u64, bool)]) -> Vec<Part> {
    let lens: Vec<u64> = inputs.iter().map(|&(len, _)| len).collect();
    let mut parts: Vec<Part> = Vec::new();
    let mut run: Option<(usize, u64)> = None; // (first input, bytes) of the open sent run
    for (i, &(len, copyable)) in inputs.iter().enumerate() {
        let short_run = run.is_some_and(|(_, bytes)| bytes < PART_MIN);
        if len < PART_MIN || !copyable || short_run {
            let (first, bytes) = run.unwrap_or((i, 0));
            run = Some((first, bytes + len));
            continue;
        }
        if let Some((first, _)) = run.take() {
            parts.push(Part::Send { first, end: i });
        }
        // Equal pieces of at most PART_MAX: each is at least PART_MIN, as len is.
        let n = len.div_ceil(PART_MAX);
        for k in 0..n {
            parts.push(Part::Copy {
                input: i,
                from: len * k / n,
                to: len * (k + 1) / n,
            });
        }
    }
    let first = run.map_or(inputs.len(), |(first, _)| first);
    parts.push(Part::Send {
        first,
        end: lens.len(),
    });
    parts
}

/// The inputs of [`plan_parts`] for objects of `lens` bytes, each a delta or not, on a store
/// that copies parts (`store_copies`) or not (everything is sent).
pub fn copyable(
    lens_and_deltas: impl IntoIterator<Item = (u64, bool)>,
    store_copies: bool,
) -> Vec<(u64, bool)> {
    lens_and_deltas
        .into_iter()
        .map(|(len, delta)| (len, store_copies && (!delta || len > SEND_AT_MOST)))
        .collect()
}

/// Where a merge of the objects of `lens` from `from` on starts on a store that copies no
/// parts: every byte is sent again, so a merge takes in only as many of the newest inputs as
/// fit in [`SEND_AT_MOST`] (the bytes a delta's first merge sends again anyway), and merged
/// objects stop growing there. `None`: not even the newest one fits.
pub fn merge_without_copies(lens: &[u64], from: usize) -> Option<usize> {
    let mut sum = 0u64;
    let mut start = lens.len();
    for (i, &len) in lens.iter().enumerate().skip(from).rev() {
        sum = sum.saturating_add(len);
        if sum > SEND_AT_MOST {
            break;
        }
        start = i;
    }
    (start < lens.len()).then_some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1000;

    #[test]
    fn spans_parse_print_and_refuse() {
        let s = Spans::parse(DEFAULT_SPANS).unwrap().unwrap();
        assert_eq!(s.0[0], 5 * S);
        assert_eq!(s.to_string(), DEFAULT_SPANS);
        assert_eq!(Spans::parse("off").unwrap(), None);
        assert_eq!(Spans::parse("2s,6s").unwrap().unwrap().0, [2 * S, 6 * S]);
        let ms = Spans::parse("250ms,1s").unwrap().unwrap();
        assert_eq!(ms.0, [250, S]);
        assert_eq!(ms.to_string(), "250ms,1s");
        assert!(Spans::choose(Some("250ms"), Duration::from_millis(200)).is_err());
        assert!(Spans::choose(Some("250ms"), Duration::from_millis(100)).is_ok());
        assert_eq!(
            Spans::choose(None, Duration::from_secs(1)).unwrap(),
            Spans::parse(DEFAULT_SPANS).unwrap()
        );
        for bad in [
            "", "5", "5s,7s", "1m,30s", "1m,1m", "0s", "5x", "-1s", "s", "400d", "5ms", "ms",
        ] {
            assert!(Spans::parse(bad).is_err(), "accepted {bad:?}");
        }
        assert_eq!(
            Spans::default_for(Duration::from_secs(10)).unwrap().0[0],
            20 * S
        );
        assert_eq!(Spans::default_for(Duration::from_secs(86_400 * 30)), None);
    }

    #[test]
    fn a_new_window_merges_what_the_window_before_held() {
        let spans = Spans(vec![10 * S, 60 * S]);
        // Deltas at 1..9 s: the point at 10 s starts a new 10 s window.
        let held: Vec<u64> = (1..10).map(|t| t * S).collect();
        assert_eq!(merge_from(&held, 9 * S, 10 * S, &spans), Some(0));
        assert_eq!(merge_from(&held, 9 * S, 9_500, &spans), None);
        // An object merged at 10 s (points 1..10), then deltas 11..19: only the deltas.
        let mut held = vec![S];
        held.extend((11..20).map(|t| t * S));
        assert_eq!(merge_from(&held, 19 * S, 20 * S, &spans), Some(1));
        // At 60 s the minute ends: everything since 0 s, merged objects included.
        let held = vec![S, 11 * S, 21 * S, 31 * S, 41 * S, 51 * S, 52 * S];
        assert_eq!(merge_from(&held, 59 * S, 60 * S, &spans), Some(0));
        // After a quiet hour, one write: the minute of the last point is merged.
        assert_eq!(merge_from(&held, 59 * S, 3_600 * S, &spans), Some(0));
        // Nothing held in the window that ended: nothing to merge.
        assert_eq!(merge_from(&[S], 10 * S, 20 * S, &spans), None);
        assert_eq!(merge_from(&[], 0, 20 * S, &spans), None);
    }

    /// Simulates a month of one point a second under the default spans: the objects held never
    /// exceed the bound the module promises.
    #[test]
    fn a_month_at_one_point_a_second_stays_within_the_bound() {
        let spans = Spans::parse(DEFAULT_SPANS).unwrap().unwrap();
        let start = 1_764_000_000 * S + 123;
        let mut held: Vec<(u64, u64)> = Vec::new(); // (first, last) point time
        let mut most = 0;
        for k in 0..30 * 86_400u64 {
            let now = start + k * S;
            let firsts: Vec<u64> = held.iter().map(|h| h.0).collect();
            let last = held.last().map_or(0, |h| h.1);
            match merge_from(&firsts, last, now, &spans) {
                Some(i) if !held.is_empty() => {
                    let first = held[i].0;
                    held.truncate(i);
                    held.push((first, now));
                }
                _ => held.push((now, now)),
            }
            most = most.max(held.len());
        }
        eprintln!("a month at one point a second: at most {most} objects held");
        assert!(most <= 40, "{most} objects held at most");
        assert!(most >= 25, "{most}: the simulation is not what it claims");
    }

    /// What a day at one point a second costs when nothing can be deleted (a bucket with
    /// Object Lock keeps every replaced version until its date; a key without DeleteObject
    /// leaves them): objects and bytes written, against what stays once replaced objects are
    /// deleted. `cargo test --bin petrify a_day_of_locked_objects -- --nocapture` prints them.
    #[test]
    fn a_day_of_locked_objects() {
        let spans = Spans::parse(DEFAULT_SPANS).unwrap().unwrap();
        let start = 1_764_000_000 * S + 123;
        let per_point = 1u64 << 10; // 1 KiB a second
        let mut held: Vec<(u64, u64, u64)> = Vec::new(); // (first, last, bytes)
        let (mut puts, mut deletes, mut written) = (0u64, 0u64, 0u64);
        for k in 0..86_400u64 {
            let now = start + k * S;
            let firsts: Vec<u64> = held.iter().map(|h| h.0).collect();
            let last = held.last().map_or(0, |h| h.1);
            puts += 1;
            match merge_from(&firsts, last, now, &spans) {
                Some(i) if !held.is_empty() => {
                    let merged: u64 = held[i..].iter().map(|h| h.2).sum::<u64>() + per_point;
                    deletes += (held.len() - i) as u64;
                    written += merged;
                    let first = held[i].0;
                    held.truncate(i);
                    held.push((first, now, merged));
                }
                _ => {
                    written += per_point;
                    held.push((now, now, per_point));
                }
            }
        }
        let live: u64 = held.iter().map(|h| h.2).sum();
        eprintln!(
            "a day at 1 KiB a second: {puts} PUTs, {deletes} deletions (delete markers when \
             locked); {live} bytes kept when replaced objects are deleted, {written} bytes \
             ({:.1}x) while they are locked",
            written as f64 / live as f64
        );
        assert_eq!(live, 86_400 * per_point);
        assert!(written > 2 * live && written < 12 * live);
    }

    fn all(lens: &[u64]) -> Vec<(u64, bool)> {
        lens.iter().map(|&l| (l, true)).collect()
    }

    #[test]
    fn deltas_are_sent_again_once_merged_objects_copied() {
        const M: u64 = 1 << 20;
        // Three 6 MiB deltas and a merged object of 20 MiB: the deltas go in the last part.
        let inputs = copyable(
            [(20 * M, false), (6 * M, true), (6 * M, true), (6 * M, true)],
            true,
        );
        assert_eq!(
            plan_parts(&inputs),
            [
                Part::Copy {
                    input: 0,
                    from: 0,
                    to: 20 * M
                },
                Part::Send { first: 1, end: 4 },
            ]
        );
        // A catch-up delta of 100 MiB is copied all the same.
        assert!(matches!(
            plan_parts(&copyable([(100 * M, true)], true))[0],
            Part::Copy { .. }
        ));
    }

    #[test]
    fn without_copies_a_merge_takes_only_the_newest_inputs_that_fit() {
        const M: u64 = 1 << 20;
        assert_eq!(merge_without_copies(&[M, M, M], 0), Some(0));
        assert_eq!(merge_without_copies(&[M, M, M], 2), Some(2));
        assert_eq!(merge_without_copies(&[60 * M, 3 * M, 2 * M], 0), Some(1));
        assert_eq!(merge_without_copies(&[60 * M, 4 * M], 0), Some(0));
        assert_eq!(merge_without_copies(&[2 * M, 65 * M], 0), None);
        assert_eq!(merge_without_copies(&[M], 1), None);
        assert_eq!(merge_without_copies(&[], 0), None);
        // Nothing is ever copied.
        assert!(
            copyable([(PART_MAX, false), (SEND_AT_MOST + 1, true)], false)
                .iter()
                .all(|&(_, c)| !c)
        );
    }

    #[test]
    fn parts_copy_large_inputs_and_never_leave_a_short_part_before_the_last() {
        const M: u64 = 1 << 20;
        // All small: one PUT.
        assert_eq!(
            plan_parts(&all(&[M, M, M])),
            [Part::Send { first: 0, end: 3 }]
        );
        assert_eq!(plan_parts(&all(&[])), [Part::Send { first: 0, end: 0 }]);
        // Large inputs copied, small ones sent, the last part carries the new bytes.
        assert_eq!(
            plan_parts(&all(&[6 * M, 7 * M, M])),
            [
                Part::Copy {
                    input: 0,
                    from: 0,
                    to: 6 * M
                },
                Part::Copy {
                    input: 1,
                    from: 0,
                    to: 7 * M
                },
                Part::Send { first: 2, end: 3 },
            ]
        );
        // A short run before a large input takes it in (and what follows, while still short).
        assert_eq!(
            plan_parts(&all(&[M, 6 * M, 8 * M])),
            [
                Part::Send { first: 0, end: 2 },
                Part::Copy {
                    input: 2,
                    from: 0,
                    to: 8 * M
                },
                Part::Send { first: 3, end: 3 },
            ]
        );
        // A 12 GiB input: three equal copies, each under the largest part.
        let parts = plan_parts(&all(&[12 << 30]));
        assert_eq!(parts.len(), 4);
        assert!(
            parts[..3]
                .iter()
                .all(|p| matches!(p, Part::Copy { from, to, .. }
            if to - from <= PART_MAX && to - from >= PART_MIN))
        );
        // Whatever the sizes: every part but the last is at least PART_MIN, and the inputs are
        // covered once, in order.
        let mut x = 7u64;
        for _ in 0..2000 {
            let lens: Vec<u64> = (0..(x % 9))
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (x >> 33) % (12 * M)
                })
                .collect();
            let parts = plan_parts(&all(&lens));
            let (mut next, mut within) = (0usize, 0u64);
            for (k, p) in parts.iter().enumerate() {
                let size = match *p {
                    Part::Copy { input, from, to } => {
                        assert_eq!((input, from), (next, within));
                        within = to;
                        if to == lens[input] {
                            (next, within) = (next + 1, 0);
                        }
                        to - from
                    }
                    Part::Send { first, end } => {
                        assert_eq!((first, within), (next, 0));
                        next = end;
                        lens[first..end].iter().sum()
                    }
                };
                if k + 1 < parts.len() {
                    assert!(size >= PART_MIN, "{lens:?} -> {parts:?}");
                }
            }
            assert_eq!(next, lens.len());
            assert!(matches!(parts.last(), Some(Part::Send { .. })));
        }
    }
}
