//! Chain planning: from the keys in the bucket to generations, recovery points, and the exact list
//! of objects that rebuild a part as of a time. Pure functions over [`ObjectKey`]s: no I/O.

use std::collections::BTreeMap;

use crate::layout::{Kind, Mode, ObjectKey};

mod check;
mod downloads;
mod plan;
mod stored;
mod walk;

pub use check::{BrokenPoint, check_points};
pub use downloads::{Download, downloads, runs};
pub use plan::{ChainError, plan_part};
pub use stored::{Stored, StoredPart, stored};
pub use walk::{PartView, walk};

/// A generation is named by its number and mode (two writers could, in a damaged bucket, have
/// used one number with two modes: they are kept apart, never merged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GenId {
    pub number: u64,
    pub mode: Mode,
}

impl GenId {
    /// The generation `o` belongs to.
    pub fn of(o: &ObjectKey) -> GenId {
        GenId {
            number: o.generation,
            mode: o.mode,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub id: GenId,
    /// Objects per part, sorted by (start, end, time).
    pub parts: BTreeMap<String, Vec<ObjectKey>>,
    /// Objects whose every point a larger (merged) object holds too: left behind by a
    /// compaction that had not deleted them yet. No chain uses them; persist deletes them.
    pub hidden: Vec<ObjectKey>,
}

impl Generation {
    pub fn objects(&self) -> impl Iterator<Item = &ObjectKey> {
        self.parts.values().flatten()
    }

    /// The objects in the bucket (a merged object once, however many points it holds), in
    /// part and chain order.
    pub fn stored(&self) -> Vec<&ObjectKey> {
        let mut out: Vec<&ObjectKey> = self.objects().map(ObjectKey::holder).collect();
        out.dedup();
        out.sort_by(|a, b| {
            (&a.part, a.start, a.end, a.time_ms).cmp(&(&b.part, b.start, b.end, b.time_ms))
        });
        out.dedup();
        out
    }

    pub fn last_time(&self) -> u64 {
        self.objects().map(|o| o.time_ms).max().unwrap_or(0)
    }

    /// What [`walk`] walks: every object plain (a merged object's points each their own).
    pub fn view(&self) -> Vec<PartView<'_>> {
        self.parts
            .iter()
            .map(|(name, objects)| PartView {
                name,
                objects,
                lines: &[],
            })
            .collect()
    }
}

/// Groups parsed keys into generations, oldest first.
pub fn generations(objects: impl IntoIterator<Item = ObjectKey>) -> Vec<Generation> {
    let mut by_id: BTreeMap<GenId, Generation> = BTreeMap::new();
    for o in objects {
        let id = GenId::of(&o);
        by_id
            .entry(id)
            .or_insert_with(|| Generation {
                id,
                parts: BTreeMap::new(),
                hidden: Vec::new(),
            })
            .parts
            .entry(o.part.clone())
            .or_default()
            .push(o);
    }
    let mut gens: Vec<Generation> = by_id.into_values().collect();
    for g in &mut gens {
        // An object whose every point a larger one holds too (a merged object written, the
        // objects it replaces not deleted yet) is hidden: no chain needs it, and persist
        // deletes it. It goes whole, so that no object is left with a hole in its points.
        // Sorted so that each run of one point starts with its largest holder: one pass, no
        // table of points (a month of them is millions).
        // A piece of a closed look, once merged, is a line of the merged object like a delta.
        let point = |o: &ObjectKey| {
            let kind = match o.kind {
                Kind::Piece => Kind::Delta,
                k => k,
            };
            (o.start, o.end, o.time_ms, kind, o.crc)
        };
        let mut needed: BTreeMap<ObjectKey, bool> = BTreeMap::new();
        for objs in g.parts.values_mut() {
            objs.sort_by_key(|o| (point(o), std::cmp::Reverse(o.holder().len())));
            let mut largest = 0;
            for (i, o) in objs.iter().enumerate() {
                if i == 0 || point(&objs[i - 1]) != point(o) {
                    largest = o.holder().len();
                }
                let elsewhere = o.holder().len() < largest;
                match needed.get_mut(o.holder()) {
                    Some(n) => *n |= !elsewhere,
                    None => {
                        needed.insert(o.holder().clone(), !elsewhere);
                    }
                }
            }
        }
        let hidden: std::collections::BTreeSet<ObjectKey> = needed
            .into_iter()
            .filter(|(_, needed)| !needed)
            .map(|(h, _)| h)
            .collect();
        for objs in g.parts.values_mut() {
            objs.retain(|o| !hidden.contains(o.holder()));
        }
        g.hidden = hidden.into_iter().collect();
    }
    gens
}

/// One moment the source can be rebuilt as of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RecoveryPoint {
    pub time_ms: u64,
    pub generation: GenId,
    /// Bytes the rebuilt file (or folder, all files summed) holds at this point.
    pub bytes: u64,
}

/// The name of the manifest part of an `aofdir` generation, if it has exactly one.
pub fn manifest_part(g: &Generation) -> Option<&str> {
    let mut names = g.parts.keys().filter(|p| p.ends_with(".manifest"));
    match (names.next(), names.next()) {
        (Some(n), None) => Some(n.as_str()),
        _ => None,
    }
}

/// Every recovery point of every generation, in generation order, then by time within each
/// (see [`walk`], which defines them).
///
/// Generation order, not time order: generations follow each other (persist finishes one before
/// it starts the next), so under a correct clock both orders agree; after the host clock was
/// stepped back, an older generation can hold times later than a newer one's, and those are
/// not allowed to shadow the newer generation (see [`choose`]).
///
/// The sizes assume the chain is whole; [`check_points`] and [`plan_part`] prove that.
pub fn recovery_points(gens: &[Generation]) -> Vec<RecoveryPoint> {
    let mut points = Vec::new();
    for g in gens {
        walk(g.id, &g.view(), |p, _| points.push(p));
    }
    points.sort_by_key(|p| (p.generation, p.time_ms));
    points
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChooseError {
    /// No recovery point at all under this prefix.
    Empty,
    /// `--at-timestamp` is before the earliest point.
    BeforeFirst { earliest: u64 },
}

/// The newest point at or before `at_ms`, or the newest of all: the last point, in the order of
/// [`recovery_points`], whose time is not after `at_ms`. Points of an older generation whose
/// times lie after a newer generation's (a clock that was ahead, then corrected) therefore never
/// win over the newer generation, and real times stay recoverable.
pub fn choose(points: &[RecoveryPoint], at_ms: Option<u64>) -> Result<RecoveryPoint, ChooseError> {
    let earliest = points
        .iter()
        .map(|p| p.time_ms)
        .min()
        .ok_or(ChooseError::Empty)?;
    points
        .iter()
        .rev()
        .find(|p| at_ms.is_none_or(|t| p.time_ms <= t))
        .copied()
        .ok_or(ChooseError::BeforeFirst { earliest })
}

/// Length and CRC-32 of the bytes a chain rebuilds, from the objects' CRCs alone.
pub fn chain_crc(chain: &[ObjectKey]) -> (u64, u32) {
    let mut crc = 0;
    let mut end = 0;
    for o in chain {
        crc = crate::crc::combine(crc, o.crc, o.len());
        end = o.end;
    }
    (end, crc)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::layout::FILE_PART;

    /// Numbers below `n` (0 for 0), from a xorshift seeded with `seed`: random cases that
    /// are the same on every run.
    pub(crate) fn random(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n.max(1)
        }
    }

    /// A delta of a `file` generation, CRC 0 (planning never reads CRCs).
    pub(crate) fn delta(generation: u64, start: u64, end: u64, t: u64) -> ObjectKey {
        ObjectKey {
            generation,
            mode: Mode::File,
            part: FILE_PART.into(),
            start,
            end,
            time_ms: t,
            crc: 0,
            kind: Kind::Delta,
            seal: crate::layout::Seal::Plain,
            stored: (0, end - start),
            within: None,
        }
    }

    fn ranges(chain: &[ObjectKey]) -> Vec<(u64, u64)> {
        chain.iter().map(|o| (o.start, o.end)).collect()
    }

    #[test]
    fn plans_the_prefix_observed_by_a_time() {
        let objs = vec![
            delta(1, 0, 10, 100),
            delta(1, 10, 25, 200),
            delta(1, 25, 30, 300),
        ];
        assert_eq!(
            ranges(&plan_part(&objs, 300).unwrap()),
            [(0, 10), (10, 25), (25, 30)]
        );
        assert_eq!(ranges(&plan_part(&objs, 299).unwrap()), [(0, 10), (10, 25)]);
        assert_eq!(ranges(&plan_part(&objs, 100).unwrap()), [(0, 10)]);
        assert!(plan_part(&objs, 99).is_err());
    }

    #[test]
    fn a_gap_is_an_error_naming_the_offset() {
        let objs = vec![delta(1, 0, 10, 100), delta(1, 25, 30, 300)];
        let e = plan_part(&objs, 300).unwrap_err();
        assert!(e.to_string().contains("bytes 10..25 are missing"), "{e}");
        // Before the orphan was observed, the prefix is whole.
        assert_eq!(ranges(&plan_part(&objs, 200).unwrap()), [(0, 10)]);
        // A missing first object is an error too.
        assert!(plan_part(&[delta(1, 10, 20, 5)], 5).is_err());
    }

    #[test]
    fn a_retried_upload_takes_the_longer_object() {
        let objs = vec![
            delta(1, 0, 10, 100),
            delta(1, 10, 15, 200), // answer lost, but stored
            delta(1, 10, 40, 300), // the retry, with what was appended since
            delta(1, 40, 50, 400),
        ];
        assert_eq!(ranges(&plan_part(&objs, 250).unwrap()), [(0, 10), (10, 15)]);
        assert_eq!(
            ranges(&plan_part(&objs, 400).unwrap()),
            [(0, 10), (10, 40), (40, 50)]
        );
    }

    #[test]
    fn empty_first_object_starts_a_chain() {
        let objs = vec![delta(1, 0, 0, 100), delta(1, 0, 7, 200)];
        assert_eq!(ranges(&plan_part(&objs, 100).unwrap()), [(0, 0)]);
        assert_eq!(ranges(&plan_part(&objs, 200).unwrap()), [(0, 7)]);
    }

    #[test]
    fn snapshot_shortcuts_the_deltas() {
        let mut snap = delta(1, 0, 25, 200);
        snap.kind = Kind::Snap;
        let objs = vec![
            delta(1, 0, 10, 100),
            delta(1, 10, 25, 200),
            snap,
            delta(1, 25, 30, 300),
        ];
        let chain = plan_part(&objs, 300).unwrap();
        assert_eq!(ranges(&chain), [(0, 25), (25, 30)]);
        assert_eq!(chain[0].kind, Kind::Snap);
        assert_eq!(ranges(&plan_part(&objs, 150).unwrap()), [(0, 10)]);
    }

    #[test]
    fn newest_snapshot_wins_for_rewritten_parts() {
        let mut a = delta(1, 0, 90, 100);
        a.kind = Kind::Snap;
        let mut b = delta(1, 0, 60, 200);
        b.kind = Kind::Snap;
        let objs = vec![b.clone(), a.clone()];
        assert_eq!(plan_part(&objs, 150).unwrap(), [a]);
        assert_eq!(plan_part(&objs, 250).unwrap(), [b]);
    }

    #[test]
    fn points_and_choice_across_generations() {
        let gens = generations(vec![
            delta(2, 0, 5, 400),
            delta(1, 10, 25, 200),
            delta(1, 0, 10, 100),
            delta(2, 5, 9, 500),
        ]);
        assert_eq!(gens.len(), 2);
        let pts = recovery_points(&gens);
        let summary: Vec<(u64, u64, u64)> = pts
            .iter()
            .map(|p| (p.time_ms, p.generation.number, p.bytes))
            .collect();
        assert_eq!(
            summary,
            [(100, 1, 10), (200, 1, 25), (400, 2, 5), (500, 2, 9)]
        );
        assert_eq!(choose(&pts, None).unwrap().time_ms, 500);
        assert_eq!(choose(&pts, Some(399)).unwrap().time_ms, 200);
        assert_eq!(choose(&pts, Some(400)).unwrap().generation.number, 2);
        assert_eq!(
            choose(&pts, Some(99)),
            Err(ChooseError::BeforeFirst { earliest: 100 })
        );
        assert_eq!(choose(&[], None), Err(ChooseError::Empty));
    }

    #[test]
    fn aofdir_points_start_at_the_first_manifest() {
        let obj = |part: &str, end: u64, t: u64, kind: Kind| ObjectKey {
            generation: 1,
            mode: Mode::AofDir,
            part: part.into(),
            start: 0,
            end,
            time_ms: t,
            crc: 0,
            kind,
            seal: crate::layout::Seal::Plain,
            stored: (0, end),
            within: None,
        };
        let gens = generations(vec![
            obj("a.base.rdb", 100, 10, Kind::Delta),
            obj("a.incr.aof", 0, 10, Kind::Delta),
            // the tick at 10 was cut short before its manifest: no point there
            obj("a.manifest", 80, 20, Kind::Snap),
            obj("a.incr.aof", 5, 20, Kind::Delta),
        ]);
        let pts = recovery_points(&gens);
        assert_eq!(pts.len(), 1);
        assert_eq!((pts[0].time_ms, pts[0].bytes), (20, 185));
    }

    #[test]
    fn a_generation_after_a_clock_step_back_is_not_shadowed() {
        // Generation 1 was written with a clock an hour ahead (times 5000..), then corrected:
        // generation 2 carries true times (300, 400).
        let gens = generations(vec![
            delta(1, 0, 10, 100),
            delta(1, 10, 20, 5000),
            delta(1, 20, 30, 5100),
            delta(2, 0, 40, 300),
            delta(2, 40, 50, 400),
        ]);
        let pts = recovery_points(&gens);
        let at = |t| {
            let p = choose(&pts, t).unwrap();
            (p.generation.number, p.time_ms)
        };
        assert_eq!(at(None), (2, 400));
        assert_eq!(at(Some(350)), (2, 300));
        assert_eq!(at(Some(150)), (1, 100));
        // Even once the real clock reaches the bogus times, generation 2 stays the answer.
        assert_eq!(at(Some(5050)), (2, 400));
        assert_eq!(
            choose(&pts, Some(50)),
            Err(ChooseError::BeforeFirst { earliest: 100 })
        );
    }

    #[test]
    fn chain_crc_combines_object_crcs() {
        let data = b"hello, append-only world";
        let mut chain = Vec::new();
        for (s, e) in [(0usize, 5usize), (5, 5), (5, 17), (17, data.len())] {
            let mut o = delta(1, s as u64, e as u64, 1);
            o.crc = crc32fast::hash(&data[s..e]);
            chain.push(o);
        }
        assert_eq!(
            chain_crc(&chain),
            (data.len() as u64, crc32fast::hash(data))
        );
        assert_eq!(chain_crc(&[]), (0, crc32fast::hash(b"")));
    }
}
