//! Deltas of one part that hold the same range under different CRC-32s: two different
//! histories where there must be one. (A retried upload with more bytes starts at the same
//! offset but ends later: that is checked by `--deep`.)

use std::collections::BTreeMap;

use crate::chain::StoredPart;
use crate::layout::index::Line;
use crate::layout::{Kind, ObjectKey};

fn message(first: &ObjectKey, other: &ObjectKey, generation: u64, part: &str) -> String {
    format!(
        "objects {first} and {other}: generation {generation}, part {part}, bytes {}..{} held \
         twice with different CRC-32s",
        other.start, other.end
    )
}

/// Among planned objects (a merged object's points each their own).
pub fn planned(part: &str, generation: u64, objs: &[ObjectKey]) -> Vec<String> {
    let mut by_range: BTreeMap<(u64, u64), Vec<&ObjectKey>> = BTreeMap::new();
    for o in objs.iter().filter(|o| o.kind == Kind::Delta) {
        by_range.entry((o.start, o.end)).or_default().push(o);
    }
    by_range
        .into_values()
        .filter_map(|v| {
            let first = v.first()?;
            let other = v.iter().find(|o| o.crc != first.crc)?;
            Some(message(first, other, generation, part))
        })
        .collect()
}

/// Among a stored part's deltas and the points of its merged objects, without one object per
/// point: plain deltas against each line, and lines against each other where they overlap.
pub fn stored(part: &str, generation: u64, p: &StoredPart) -> Vec<String> {
    let mut found: Vec<((u64, u64), String)> = Vec::new();
    let deltas: Vec<&ObjectKey> = p.objects.iter().filter(|o| o.kind == Kind::Delta).collect();
    let mut by_range: BTreeMap<(u64, u64), Vec<&ObjectKey>> = BTreeMap::new();
    for o in &deltas {
        by_range.entry((o.start, o.end)).or_default().push(o);
    }
    for (range, v) in &by_range {
        let first = v[0];
        if let Some(other) = v.iter().find(|o| o.crc != first.crc) {
            found.push((*range, message(first, other, generation, part)));
            continue;
        }
        let inside = p.lines.iter().find_map(|l| {
            points_of(l, *range)
                .find(|&i| l.entry(i).crc != first.crc)
                .map(|i| l.piece(i))
        });
        if let Some(other) = inside {
            found.push((*range, message(first, &other, generation, part)));
        }
    }
    for (a, la) in p.lines.iter().enumerate() {
        for lb in &p.lines[a + 1..] {
            found.extend(
                disagreements(la, lb)
                    .map(|(i, j)| ((la.start_of(i), la.ends()[i]), (la.piece(i), lb.piece(j))))
                    .filter(|(range, _)| !by_range.contains_key(range))
                    .map(|(range, (x, y))| (range, message(&x, &y, generation, part))),
            );
        }
    }
    found.sort();
    found.dedup_by(|a, b| a.0 == b.0);
    found.into_iter().map(|(_, m)| m).collect()
}

/// The points of `l` holding exactly `range`.
fn points_of(l: &Line, (start, end): (u64, u64)) -> impl Iterator<Item = usize> + '_ {
    let ends = l.ends();
    let from = ends.partition_point(|&e| e < end);
    (from..ends.len())
        .take_while(move |&i| ends[i] == end)
        .filter(move |&i| l.start_of(i) == start)
}

/// Points of two lines holding one range under different CRCs: one walk of both in offset
/// order.
fn disagreements<'a>(a: &'a Line, b: &'a Line) -> impl Iterator<Item = (usize, usize)> + 'a {
    let overlap = a.merged.start < b.merged.end && b.merged.start < a.merged.end;
    let (mut i, mut j) = (0, 0);
    std::iter::from_fn(move || {
        while overlap && i < a.len() && j < b.len() {
            let ra = (a.start_of(i), a.ends()[i]);
            let rb = (b.start_of(j), b.ends()[j]);
            match ra.cmp(&rb) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    let hit = (a.entry(i).crc != b.entry(j).crc).then_some((i, j));
                    i += 1;
                    j += 1;
                    if hit.is_some() {
                        return hit;
                    }
                }
            }
        }
        None
    })
}
