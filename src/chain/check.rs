//! Which recovery points can be rebuilt from the keys alone: for `list`, which shows only those
//! and names the others. One pass per part (a month of one-second points is millions of them),
//! deciding exactly as [`super::plan_part`] would.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound::{Excluded, Unbounded};

use super::{ChainError, GenId, Generation, RecoveryPoint};
use crate::layout::{Kind, ObjectKey};

/// A recovery point whose chain cannot be rebuilt from the keys in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenPoint {
    pub point: RecoveryPoint,
    pub why: ChainError,
}

/// Splits `points` (from [`recovery_points`]) into those whose every part's chain is whole as of
/// the point's time, and the broken ones with the reason.
pub fn check_points(
    gens: &[Generation],
    points: Vec<RecoveryPoint>,
) -> (Vec<RecoveryPoint>, Vec<BrokenPoint>) {
    // For each generation and part, the verdict after each time an object arrived.
    let mut verdicts: BTreeMap<GenId, Vec<Vec<Verdict>>> = BTreeMap::new();
    for g in gens {
        let per_part = g.parts.values().map(|objs| part_verdicts(objs)).collect();
        verdicts.insert(g.id, per_part);
    }
    let mut good = Vec::new();
    let mut broken = Vec::new();
    for p in points {
        let verdict = verdicts
            .get(&p.generation)
            .into_iter()
            .flatten()
            .filter_map(|part| {
                // The verdict as of the newest time not after the point; a part with no object
                // by then is not part of this point.
                let i = part.partition_point(|(t, _)| *t <= p.time_ms);
                i.checked_sub(1).map(|i| &part[i].1)
            })
            .find_map(|v| v.as_ref().err());
        match verdict {
            None => good.push(p),
            Some(why) => broken.push(BrokenPoint {
                point: p,
                why: why.clone(),
            }),
        }
    }
    (good, broken)
}

/// From this time on (until the next entry), whether a part's chain is whole.
type Verdict = (u64, Result<(), ChainError>);

/// Whether one part's chain is whole as of each time an object arrived: exactly what
/// [`super::plan_part`] would answer then (a path of objects from the start to the part's
/// length exists), computed incrementally as reachability, and kept as the times it changes.
fn part_verdicts(objects: &[ObjectKey]) -> Vec<Verdict> {
    let Some(part) = objects.first().map(|o| o.part.as_str()) else {
        return Vec::new();
    };
    let mut by_time: Vec<&ObjectKey> = objects.iter().collect();
    // A snapshot restarts the chain: it goes first among objects of one time, as in planning.
    by_time.sort_by_key(|o| (o.time_ms, o.kind != Kind::Snap));
    let mut snap: Option<(u64, u64)> = None; // (time, end) of the newest snapshot
    let mut paths = Paths::from(0);
    let mut out: Vec<Verdict> = Vec::new();
    let mut i = 0;
    while i < by_time.len() {
        let t = by_time[i].time_ms;
        while i < by_time.len() && by_time[i].time_ms == t {
            let o = by_time[i];
            match o.kind {
                Kind::Snap => {
                    if snap.is_none_or(|s| (o.time_ms, o.end) > s) {
                        // Appended bytes observed before the snapshot are another content's.
                        snap = Some((o.time_ms, o.end));
                        paths = Paths::from(o.end);
                    }
                }
                Kind::Delta | Kind::Merged | Kind::Piece => paths.add(o.start, o.end),
            }
            i += 1;
        }
        let verdict = paths.verdict(part);
        // A step function of time: only its changes are kept (a whole chain is one entry).
        if out.last().is_none_or(|(_, last)| *last != verdict) {
            out.push((t, verdict));
        }
    }
    out
}

/// The offsets chains from `origin` reach, as objects arrive.
struct Paths {
    target: u64,
    reach: BTreeSet<u64>,
    /// Objects whose start no chain reaches yet: start -> ends.
    waiting: BTreeMap<u64, Vec<u64>>,
}

impl Paths {
    fn from(origin: u64) -> Paths {
        Paths {
            target: origin,
            reach: BTreeSet::from([origin]),
            waiting: BTreeMap::new(),
        }
    }

    fn add(&mut self, start: u64, end: u64) {
        self.target = self.target.max(end);
        if !self.reach.contains(&start) {
            self.waiting.entry(start).or_default().push(end);
            return;
        }
        let mut todo = vec![end];
        while let Some(x) = todo.pop() {
            if self.reach.insert(x) {
                todo.extend(self.waiting.remove(&x).into_iter().flatten());
            }
        }
    }

    fn verdict(&self, part: &str) -> Result<(), ChainError> {
        if self.reach.contains(&self.target) {
            return Ok(());
        }
        let reached = self.reach.last().copied().unwrap_or(0);
        let next = self
            .waiting
            .range((Excluded(reached), Unbounded))
            .next()
            .map(|(&s, _)| s);
        Err(super::plan::missing(part, reached, next, self.target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::tests::delta;
    use crate::chain::{generations, plan_part, recovery_points};
    use crate::layout::FILE_PART;

    #[test]
    fn check_points_names_what_is_missing() {
        let gens = generations(vec![
            delta(1, 0, 10, 100),
            // 10..20, observed at 200, was deleted from the bucket
            delta(1, 20, 30, 300),
            delta(1, 30, 35, 400),
            delta(2, 0, 5, 500),
        ]);
        let pts = recovery_points(&gens);
        let (good, broken) = check_points(&gens, pts);
        let times: Vec<u64> = good.iter().map(|p| p.time_ms).collect();
        assert_eq!(times, [100, 500]);
        assert_eq!(broken.len(), 2);
        assert_eq!(broken[0].point.time_ms, 300);
        assert!(
            broken[0].why.0.contains("bytes 10..20 are missing"),
            "{:?}",
            broken[0]
        );
    }

    #[test]
    fn keys_at_the_end_of_the_offset_space_do_not_overflow() {
        let gens = generations(vec![
            delta(1, 0, u64::MAX, 100),
            delta(1, u64::MAX, u64::MAX, 200),
        ]);
        let (good, broken) = check_points(&gens, recovery_points(&gens));
        assert_eq!((good.len(), broken.len()), (2, 0));
    }

    /// The one-pass check agrees with the planner on random chains with holes, retries,
    /// empty starts and snapshots.
    #[test]
    fn check_points_agrees_with_plan_part() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..2000 {
            let mut objs = Vec::new();
            let (mut end, mut t) = (0u64, 0u64);
            for _ in 0..1 + next(8) {
                t += 1 + next(3);
                let len = next(4);
                let mut o = delta(1, end, end + len, t);
                match next(6) {
                    0 => o.start += 1 + next(3),           // a hole
                    1 if end > 0 => o.start -= 1.min(end), // overlap
                    2 => {
                        o.kind = Kind::Snap;
                        o.start = 0;
                    }
                    _ => {}
                }
                o.end = o.end.max(o.start);
                end = o.end;
                if next(5) != 0 {
                    objs.push(o); // else: deleted
                }
            }
            let gens = generations(objs.clone());
            let pts = recovery_points(&gens);
            let (good, broken) = check_points(&gens, pts);
            for p in &good {
                assert!(
                    plan_part(&gens[0].parts[FILE_PART], p.time_ms).is_ok(),
                    "{objs:?} at {p:?}"
                );
            }
            for b in &broken {
                assert!(
                    plan_part(&gens[0].parts[FILE_PART], b.point.time_ms).is_err(),
                    "{objs:?} at {b:?}"
                );
            }
        }
    }
}
