//! The walk against the points one by one and the planner.

use crate::chain::tests::delta;
use crate::chain::{ChainError, RecoveryPoint, check_points, generations, plan_part};
use crate::chain::{recovery_points, stored, walk};
use crate::layout::index::{Entry, Line};
use crate::layout::{FILE_PART, Kind, ObjectKey};

type Walked = Vec<(RecoveryPoint, Option<ChainError>)>;

/// Walking merged objects as lines says what walking their points one by one says (and
/// what the planner says), on random parts with holes, overlaps, snapshots, and merged
/// objects whose inputs were or were not deleted, merged again or not.
#[test]
fn lines_walk_as_their_points_do() {
    let mut next = crate::chain::tests::random(0x2545_f491_4f6c_dd1d);
    for case in 0..3000 {
        let mut objs: Vec<ObjectKey> = Vec::new();
        let (mut end, mut t) = (0u64, 0u64);
        for _ in 0..1 + next(12) {
            t += 1 + next(3);
            let mut o = delta(1, end, end + next(4), t);
            match next(9) {
                0 => o.start += 1 + next(3),
                1 if end > 0 => o.start -= 1.min(end),
                2 => {
                    // A snapshot, as long as the part was or shorter (a file rewritten)
                    o.kind = Kind::Snap;
                    o.start = 0;
                    o.end = next(end + 4);
                }
                _ => {}
            }
            o.end = o.end.max(o.start);
            o.crc = (o.start * 31 + o.end) as u32;
            end = o.end;
            objs.push(o);
        }
        // Merge runs of contiguous deltas into lines, some of them twice.
        let mut lines: Vec<Line> = Vec::new();
        for _ in 0..next(4) {
            let from = next(objs.len() as u64) as usize;
            let mut run = vec![objs[from].clone()];
            for o in &objs[from + 1..] {
                if o.kind == Kind::Snap && next(2) == 0 {
                    continue; // a line across a snapshot
                }
                let last = &run[run.len() - 1];
                if o.kind != Kind::Delta || o.start != last.end || next(4) == 0 {
                    break;
                }
                run.push(o.clone());
            }
            if run[0].kind != Kind::Delta {
                continue;
            }
            let first = &run[0];
            let last = &run[run.len() - 1];
            let mut merged = delta(1, first.start, last.end, last.time_ms);
            merged.kind = Kind::Merged;
            let entries: Vec<Entry> = run
                .iter()
                .map(|o| Entry {
                    end: o.end,
                    time_ms: o.time_ms,
                    crc: o.crc,
                    stored: o.len(),
                })
                .collect();
            merged.crc = entries.len() as u32;
            lines.push(Line::new(&merged, &entries));
            if next(2) == 0 {
                let keys: Vec<ObjectKey> = run.clone();
                objs.retain(|o| !keys.contains(o));
            }
            if objs.is_empty() {
                break;
            }
        }
        objs.retain(|_| next(6) != 0); // lost by hand
        let expanded: Vec<ObjectKey> = objs
            .iter()
            .cloned()
            .chain(lines.iter().flat_map(|l| l.pieces()))
            .collect();
        let gens = generations(expanded.clone());
        let mut want: Walked = Vec::new();
        let (good, broken) = check_points(&gens, recovery_points(&gens));
        want.extend(good.into_iter().map(|p| (p, None)));
        want.extend(broken.into_iter().map(|b| (b.point, Some(b.why))));
        want.sort();
        let mut got: Walked = Vec::new();
        for g in stored(objs.clone(), lines.clone()) {
            walk(g.id, &g.view(), |p, why| got.push((p, why.cloned())));
        }
        got.sort();
        assert_eq!(got, want, "case {case}: {objs:?} {lines:?}");
        for (p, why) in &want {
            let planned = plan_part(&gens[0].parts[FILE_PART], p.time_ms);
            assert_eq!(planned.is_ok(), why.is_none(), "case {case}: {p:?}");
        }
    }
}
