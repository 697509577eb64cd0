//! Which recovery points can be rebuilt from the keys alone: for `list`, which shows only those
//! and names the others, and for recover and status, which vouch for the point they choose.
//! The answer is [`super::walk`]'s, the one definition of points and their chains.

use std::collections::{BTreeMap, BTreeSet};

use super::{ChainError, GenId, Generation, RecoveryPoint, walk};

/// A recovery point whose chain cannot be rebuilt from the keys in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenPoint {
    pub point: RecoveryPoint,
    pub why: ChainError,
}

/// Splits `points` (from [`super::recovery_points`]) into those whose every part's chain is
/// whole as of the point's time, and the broken ones with the reason, each in the order given.
pub fn check_points(
    gens: &[Generation],
    points: Vec<RecoveryPoint>,
) -> (Vec<RecoveryPoint>, Vec<BrokenPoint>) {
    let mut wanted: BTreeMap<GenId, BTreeSet<u64>> = BTreeMap::new();
    for p in &points {
        wanted.entry(p.generation).or_default().insert(p.time_ms);
    }
    let mut why: BTreeMap<(GenId, u64), Option<ChainError>> = BTreeMap::new();
    for g in gens {
        let Some(times) = wanted.get(&g.id) else {
            continue;
        };
        walk(g.id, &g.view(), |p, broken| {
            if times.contains(&p.time_ms) {
                why.insert((p.generation, p.time_ms), broken.cloned());
            }
        });
    }
    let mut good = Vec::new();
    let mut broken = Vec::new();
    for p in points {
        match why.remove(&(p.generation, p.time_ms)) {
            Some(None) => good.push(p),
            Some(Some(why)) => broken.push(BrokenPoint { point: p, why }),
            None => broken.push(BrokenPoint {
                point: p,
                why: ChainError::NoPoint {
                    generation: p.generation.number,
                },
            }),
        }
    }
    (good, broken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::tests::delta;
    use crate::chain::{generations, plan_part, recovery_points};
    use crate::layout::{FILE_PART, Kind};

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
            broken[0]
                .why
                .to_string()
                .contains("bytes 10..20 are missing"),
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
        let mut next = crate::chain::tests::random(0x9e37_79b9_7f4a_7c15);
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
