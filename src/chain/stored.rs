//! A generation as the bucket stores it, for the readers that walk every point (`list`,
//! `verify`): plain objects, and each merged object as one line of points read from its index
//! (16 bytes a point), never one [`ObjectKey`] per point.

use std::collections::BTreeMap;

use super::{GenId, PartView};
use crate::layout::index::Line;
use crate::layout::{Kind, ObjectKey};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub id: GenId,
    pub parts: BTreeMap<String, StoredPart>,
    /// Objects whose every point a larger merged object holds too (see
    /// [`super::Generation::hidden`]): no chain needs them.
    pub hidden: Vec<ObjectKey>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredPart {
    /// Deltas, snapshots, pieces, and merged objects whose index could not be used (read
    /// whole, at their key's time).
    pub objects: Vec<ObjectKey>,
    /// Merged objects read through their index.
    pub lines: Vec<Line>,
}

impl Stored {
    /// What [`super::walk`] walks.
    pub fn view(&self) -> Vec<PartView<'_>> {
        self.parts
            .iter()
            .map(|(name, p)| PartView {
                name,
                objects: &p.objects,
                lines: &p.lines,
            })
            .collect()
    }

    /// The objects in the bucket that chains use, each once.
    pub fn holders(&self) -> impl Iterator<Item = &ObjectKey> {
        self.parts.values().flat_map(|p| {
            let lines = p.lines.iter().map(|l| l.merged.as_ref());
            p.objects.iter().chain(lines)
        })
    }
}

/// Groups plain objects and lines into generations, oldest first, setting aside the objects
/// a larger merged object holds every point of (as [`super::generations`] does).
pub fn stored(objects: Vec<ObjectKey>, lines: Vec<Line>) -> Vec<Stored> {
    let mut by_id: BTreeMap<GenId, Stored> = BTreeMap::new();
    fn slot<'a>(by_id: &'a mut BTreeMap<GenId, Stored>, o: &ObjectKey) -> &'a mut StoredPart {
        let id = GenId::of(o);
        by_id
            .entry(id)
            .or_insert_with(|| Stored {
                id,
                parts: BTreeMap::new(),
                hidden: Vec::new(),
            })
            .parts
            .entry(o.part.clone())
            .or_default()
    }
    for o in objects {
        slot(&mut by_id, &o).objects.push(o);
    }
    for l in lines {
        let merged = l.merged.clone();
        slot(&mut by_id, &merged).lines.push(l);
    }
    let mut gens: Vec<Stored> = by_id.into_values().collect();
    for g in &mut gens {
        for p in g.parts.values_mut() {
            g.hidden.extend(hide(p));
        }
    }
    gens
}

/// Moves out of `p` the objects each of whose points a strictly larger line holds too.
fn hide(p: &mut StoredPart) -> Vec<ObjectKey> {
    if p.lines.is_empty() {
        return Vec::new();
    }
    let larger = |len: u64, point: (u64, u64, u64, u32), lines: &[&Line]| {
        lines
            .iter()
            .any(|m| m.merged.len() > len && holds(m, point))
    };
    let mut hidden = Vec::new();
    let (objects, lines) = (std::mem::take(&mut p.objects), std::mem::take(&mut p.lines));
    for o in objects {
        // A merged object read whole (its index damaged) is no delta of any line.
        let point = (o.start, o.end, o.time_ms, o.crc);
        let all: Vec<&Line> = lines.iter().collect();
        match matches!(o.kind, Kind::Delta | Kind::Piece) && larger(o.len(), point, &all) {
            true => hidden.push(o),
            false => p.objects.push(o),
        }
    }
    let keep: Vec<bool> = lines
        .iter()
        .map(|l| {
            let (s, e, len) = (l.merged.start, l.merged.end, l.merged.len());
            let over: Vec<&Line> = lines
                .iter()
                .filter(|m| m.merged.len() > len && m.merged.start <= s && m.merged.end >= e)
                .collect();
            over.is_empty()
                || !(0..l.len()).all(|i| {
                    let e = l.entry(i);
                    larger(len, (l.start_of(i), e.end, e.time_ms, e.crc), &over)
                })
        })
        .collect();
    for (l, keep) in lines.into_iter().zip(keep) {
        match keep {
            true => p.lines.push(l),
            false => hidden.push(l.merged.as_ref().clone()),
        }
    }
    hidden
}

/// Whether line `m` has a point with these (start, end, time, CRC).
fn holds(m: &Line, (start, end, time, crc): (u64, u64, u64, u32)) -> bool {
    if start < m.merged.start || end > m.merged.end {
        return false;
    }
    let ends = m.ends();
    let from = ends.partition_point(|&e| e < end);
    (from..ends.len())
        .take_while(|&i| ends[i] == end)
        .any(|i| m.start_of(i) == start && m.entry(i).time_ms == time && m.entry(i).crc == crc)
}
