//! Planning one part's chain as of a time: which objects rebuild it, on a path through
//! whatever the bucket holds. Pure: no I/O.

use std::collections::BTreeMap;
use std::fmt;

use crate::layout::{Kind, ObjectKey};

/// Why a chain cannot be rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChainError {
    /// No chain of `part` reaches its length `target`: chains reach byte `reached`, and the
    /// nearest object beyond starts at `next`. One wording for [`plan_part`] and
    /// [`super::walk`], which must agree.
    Missing {
        part: String,
        reached: u64,
        next: Option<u64>,
        target: u64,
    },
    /// The part had no object yet at that time.
    NothingObserved,
    /// The generation has no point at that time.
    NoPoint { generation: u64 },
}

impl ChainError {
    /// The part the error is about, when it knows it.
    pub fn part(&self) -> Option<&str> {
        match self {
            ChainError::Missing { part, .. } => Some(part),
            ChainError::NothingObserved | ChainError::NoPoint { .. } => None,
        }
    }
}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainError::Missing {
                part,
                reached,
                next: Some(n),
                ..
            } => write!(f, "part {part}: bytes {reached}..{n} are missing"),
            ChainError::Missing {
                part,
                reached,
                next: None,
                target,
            } => write!(
                f,
                "part {part}: no object continues the chain at byte {reached} (the part \
                 reaches byte {target})"
            ),
            ChainError::NothingObserved => f.write_str("no object observed by that time"),
            ChainError::NoPoint { generation } => {
                write!(
                    f,
                    "generation {generation} has no recovery point at that time"
                )
            }
        }
    }
}

pub(super) fn missing(part: &str, reached: u64, next: Option<u64>, target: u64) -> ChainError {
    ChainError::Missing {
        part: part.to_string(),
        reached,
        next,
        target,
    }
}

/// What rebuilds one part as of a time: where its chains start (the end of the newest snapshot
/// observed by then, or 0), how long the part was then, and the objects that may carry a chain
/// from there (appended bytes observed by then, and not before that snapshot).
struct Usable<'a> {
    snap: Option<&'a ObjectKey>,
    origin: u64,
    target: u64,
    /// By start offset; within one merged object, in the order of its index.
    edges: Vec<&'a ObjectKey>,
}

fn usable(objects: &[ObjectKey], time_ms: u64) -> Usable<'_> {
    let seen = || objects.iter().filter(move |o| o.time_ms <= time_ms);
    let snap = seen()
        .filter(|o| o.kind == Kind::Snap)
        .max_by_key(|o| (o.time_ms, o.end));
    let since = snap.map_or(0, |s| s.time_ms);
    let mut edges: Vec<&ObjectKey> = seen()
        .filter(|o| o.kind != Kind::Snap && o.time_ms >= since)
        .collect();
    // Stable: the objects of a part come sorted by (start, end, time), which keeps a merged
    // object's points in index order (an empty point before the one that follows it).
    edges.sort_by_key(|o| o.start);
    let origin = snap.map_or(0, |s| s.end);
    let target = edges.iter().map(|o| o.end).fold(origin, u64::max);
    Usable {
        snap,
        origin,
        target,
        edges,
    }
}

/// The objects that rebuild one part as of `time_ms`, in write order, each starting where the
/// previous one ended: from the newest snapshot observed by then (if any), else from offset 0,
/// to the part's length then (the furthest end of any object observed by then).
///
/// Every object of a generation holds the bytes of one append-only history at its offsets, so
/// any path of objects from the start to that length rebuilds the part; the bucket can hold
/// several (a retried upload beside the shorter one whose answer was lost, a merged object
/// stored though its answer was lost beside the deltas it merged, the pieces of a point cut
/// short). This takes the path that costs the fewest downloads, entering a merged object at
/// any of its points and reading on through as many as it needs (one ranged GET), and fails
/// only when no path exists: never the first or longest object at an offset when that one
/// leads nowhere. [`check_points`] decides the same question for every point at once.
pub fn plan_part(objects: &[ObjectKey], time_ms: u64) -> Result<Vec<ObjectKey>, ChainError> {
    let Some(part) = objects
        .iter()
        .find(|o| o.time_ms <= time_ms)
        .map(|o| &o.part)
    else {
        return Err(ChainError::NothingObserved);
    };
    let u = usable(objects, time_ms);
    // Downloads to reach each offset, and the object that reached it.
    let mut best: BTreeMap<u64, (u64, Option<usize>)> = BTreeMap::new();
    best.insert(u.origin, (0, None));
    // For each merged object read so far: the downloads to be inside it at its last usable
    // point reached, and for each of its points whether the path came along the object
    // (`true`) or entered it there.
    let mut inside: BTreeMap<&ObjectKey, (u64, u64)> = BTreeMap::new();
    let mut along: Vec<bool> = vec![false; u.edges.len()];
    for (i, o) in u.edges.iter().enumerate() {
        let here = best.get(&o.start).map(|&(c, _)| c);
        let (cost, came_along) = match &o.within {
            Some(m) => {
                let entered = here.map(|c| c + 1);
                // Only from the object's point that ends where this one starts.
                let carried = inside
                    .get(m.as_ref())
                    .filter(|&&(_, end)| end == o.start)
                    .map(|&(c, _)| c);
                let line = match (carried, entered) {
                    (Some(c), Some(e)) if c <= e => Some((c, true)),
                    (Some(c), None) => Some((c, true)),
                    (_, Some(e)) => Some((e, false)),
                    (None, None) => None,
                };
                // Whether the object's run goes on past this point depends on this point
                // being reached at all.
                match line {
                    Some((c, _)) => inside.insert(m.as_ref(), (c, o.end)),
                    None => inside.remove(m.as_ref()),
                };
                match line {
                    Some((c, a)) => (c, a),
                    None => continue,
                }
            }
            None => match here {
                Some(c) => (c + 1, false),
                None => continue,
            },
        };
        along[i] = came_along;
        let slot = best.entry(o.end).or_insert((u64::MAX, None));
        if cost < slot.0 {
            *slot = (cost, Some(i));
        }
    }
    if !best.contains_key(&u.target) {
        let reached = best.keys().next_back().copied().unwrap_or(u.origin);
        let next = u.edges.iter().map(|o| o.start).find(|&s| s > reached);
        return Err(missing(part, reached, next, u.target));
    }
    // Back from the end: each step's object, then the one before it (along a merged object,
    // its previous point; else whatever reached the offset it starts at).
    let mut chain: Vec<ObjectKey> = Vec::new();
    let mut step = best.get(&u.target).and_then(|&(_, i)| i);
    while let Some(i) = step {
        let o = u.edges[i];
        chain.push(o.clone());
        step = match along[i] {
            true => u.edges[..i]
                .iter()
                .rposition(|p| p.within == o.within && p.end == o.start),
            false => best.get(&o.start).and_then(|&(_, j)| j),
        };
    }
    chain.reverse();
    match u.snap {
        Some(s) => chain.insert(0, s.clone()),
        // A part that holds no byte yet: its empty first object is the chain.
        None if chain.is_empty() => match u.edges.first() {
            Some(o) => chain.push((*o).clone()),
            None => return Err(missing(part, 0, None, u.target)),
        },
        None => {}
    }
    Ok(chain)
}
