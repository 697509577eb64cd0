//! The one definition of a generation's recovery points and of whether each can be rebuilt:
//! one pass over its objects in the order they were observed, streaming each point out as its
//! time closes. [`super::recovery_points`] and [`super::check_points`] are this walk collected;
//! `list` and `verify` stream it, so that a month of one-second points costs the memory of its
//! index entries (16 bytes each), never a table of points. [`super::plan_part`] answers the
//! same question for one point with the objects to read; the planner's property test holds the
//! two together.
//!
//! A merged object is walked as a line of points. A chain that reaches the start of one of its
//! points reads on through every later point (one ranged GET), so what the line lets a chain
//! reach is "every point from the first one entered, up to the newest observed": no set of
//! offsets per point. Offsets matter between objects only where they meet: the ends of plain
//! objects, and the offsets two lines share.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::ops::Bound::{Excluded, Unbounded};

use super::{ChainError, GenId, RecoveryPoint};
use crate::layout::index::Line;
use crate::layout::{Kind, Mode, ObjectKey};

/// One part of a generation as the bucket holds it: plain objects (deltas, snapshots, pieces,
/// merged objects read whole) and the lines of merged objects read through their index.
#[derive(Debug, Clone, Copy)]
pub struct PartView<'a> {
    pub name: &'a str,
    pub objects: &'a [ObjectKey],
    pub lines: &'a [Line],
}

/// Calls `emit` with every recovery point of generation `id`, in time order, and whether its
/// chain is whole: every part observed by then reaches, from its newest snapshot (or byte 0),
/// the length it had then, through objects observed by then. A point exists at each time a
/// closing object (anything but a [`Kind::Piece`]; every point of a merged object) was
/// observed; in an `aofdir` generation, from its first manifest on.
pub fn walk(
    id: GenId,
    parts: &[PartView],
    mut emit: impl FnMut(RecoveryPoint, Option<&ChainError>),
) {
    let first_valid = match id.mode {
        Mode::File => 0,
        Mode::AofDir => {
            let mut manifests = parts.iter().filter(|p| p.name.ends_with(".manifest"));
            let (Some(m), None) = (manifests.next(), manifests.next()) else {
                return;
            };
            let plain = m.objects.iter().map(|o| o.time_ms);
            let lined = m
                .lines
                .iter()
                .filter(|l| !l.is_empty())
                .map(|l| l.time_of(0));
            match plain.chain(lined).min() {
                Some(t) => t,
                None => return,
            }
        }
    };
    let mut states: Vec<PartState> = parts.iter().map(|p| PartState::new(p.lines)).collect();
    // Every object in observation order: one cursor per part's plain objects (a snapshot first
    // among those of one time: it resets the part's length) and one per line.
    let plain: Vec<Vec<&ObjectKey>> = parts
        .iter()
        .map(|p| {
            let mut v: Vec<&ObjectKey> = p.objects.iter().collect();
            v.sort_by_key(|o| (o.time_ms, o.kind != Kind::Snap));
            v
        })
        .collect();
    let mut cursors: Vec<Cursor> = Vec::new();
    for (part, p) in parts.iter().enumerate() {
        cursors.push(Cursor::Plain { part, next: 0 });
        for line in 0..p.lines.len() {
            cursors.push(Cursor::Line {
                part,
                line,
                next: 0,
            });
        }
    }
    // (time, 0 for a snapshot, cursor): snapshots of one time go before anything else of it.
    let head = |c: &Cursor| -> Option<(u64, bool)> {
        match *c {
            Cursor::Plain { part, next } => plain[part]
                .get(next)
                .map(|o| (o.time_ms, o.kind != Kind::Snap)),
            Cursor::Line { part, line, next } => {
                let l = &parts[part].lines[line];
                (next < l.len()).then(|| (l.time_of(next), true))
            }
        }
    };
    let mut heap: BinaryHeap<Reverse<(u64, bool, usize)>> = cursors
        .iter()
        .enumerate()
        .filter_map(|(i, c)| head(c).map(|(t, s)| Reverse((t, s, i))))
        .collect();
    let mut closed = false;
    while let Some(Reverse((t, _, i))) = heap.pop() {
        match &mut cursors[i] {
            Cursor::Plain { part, next } => {
                let o = plain[*part][*next];
                *next += 1;
                states[*part].object(o);
                closed |= o.kind.closes();
            }
            Cursor::Line { part, line, next } => {
                states[*part].line_point(*line, *next);
                *next += 1;
                closed = true;
            }
        }
        if let Some((t, s)) = head(&cursors[i]) {
            heap.push(Reverse((t, s, i)));
        }
        if heap.peek().is_some_and(|Reverse((next, _, _))| *next == t) {
            continue;
        }
        if closed && t >= first_valid {
            let point = RecoveryPoint {
                time_ms: t,
                generation: id,
                bytes: states.iter().map(|s| s.len).sum(),
            };
            // The first part (by name) whose chain does not reach its length.
            let why = parts
                .iter()
                .zip(&mut states)
                .filter(|(_, s)| s.seen)
                .find_map(|(p, s)| s.verdict(p.name));
            emit(point, why.as_ref());
        }
        closed = false;
    }
}

/// An offset a chain newly reaches, and how.
enum Reached {
    /// The end of a plain object, or the origin.
    Plain(u64),
    /// The end of a line's point.
    Line(u64),
}

enum Cursor {
    Plain {
        part: usize,
        next: usize,
    },
    Line {
        part: usize,
        line: usize,
        next: usize,
    },
}

/// Where chains through one part's objects observed so far can reach.
struct PartState<'a> {
    lines: &'a [Line],
    /// Whether any object of the part was observed yet: a part that was not is not part of
    /// the point.
    seen: bool,
    /// The part's length (what the point's size counts).
    len: u64,
    /// (time, end) of the newest snapshot: chains start at its end.
    snap: Option<(u64, u64)>,
    /// The length chains must reach: the furthest end observed since that snapshot.
    target: u64,
    /// The furthest offset reached.
    reached: u64,
    /// Offsets plain objects (and the origin) reached.
    reach: BTreeSet<u64>,
    /// Plain objects whose start no chain reaches yet: start -> ends.
    waiting: BTreeMap<u64, Vec<u64>>,
    /// Per line: points observed, the first one observed since the snapshot, and the first
    /// one a chain entered (every later point of the line is then reached once observed).
    observed: Vec<usize>,
    usable_from: Vec<usize>,
    entered: Vec<Option<usize>>,
    /// Offsets where two lines meet: the points that start there (line, point).
    crossings: HashMap<u64, Vec<(usize, usize)>>,
}

impl<'a> PartState<'a> {
    fn new(lines: &'a [Line]) -> PartState<'a> {
        let mut s = PartState {
            lines,
            seen: false,
            len: 0,
            snap: None,
            target: 0,
            reached: 0,
            reach: BTreeSet::new(),
            waiting: BTreeMap::new(),
            observed: vec![0; lines.len()],
            usable_from: vec![0; lines.len()],
            entered: vec![None; lines.len()],
            crossings: crossings(lines),
        };
        s.restart(0);
        s
    }

    /// Chains start again at `origin` (byte 0, or a snapshot's end): what was observed before
    /// is another content's.
    fn restart(&mut self, origin: u64) {
        self.target = origin;
        self.reached = origin;
        self.reach.clear();
        self.waiting.clear();
        self.usable_from.clone_from(&self.observed);
        self.entered.iter_mut().for_each(|e| *e = None);
        self.reach_plain(origin);
    }

    fn object(&mut self, o: &ObjectKey) {
        self.seen = true;
        match o.kind {
            Kind::Snap => {
                self.len = o.end;
                if self.snap.is_none_or(|s| (o.time_ms, o.end) > s) {
                    self.snap = Some((o.time_ms, o.end));
                    self.restart(o.end);
                }
            }
            Kind::Delta | Kind::Merged | Kind::Piece => {
                self.len = self.len.max(o.end);
                self.target = self.target.max(o.end);
                if self.reachable(o.start) {
                    self.reach_plain(o.end);
                } else {
                    self.waiting.entry(o.start).or_default().push(o.end);
                }
            }
        }
    }

    fn line_point(&mut self, line: usize, i: usize) {
        self.seen = true;
        let end = self.lines[line].ends()[i];
        self.len = self.len.max(end);
        self.target = self.target.max(end);
        self.observed[line] = i + 1;
        if self.entered[line].is_some_and(|e| e <= i) {
            self.reached_by_line(end);
        }
    }

    /// Whether a chain reaches `offset` now.
    fn reachable(&self, offset: u64) -> bool {
        self.reach.contains(&offset)
            || self.lines.iter().enumerate().any(|(l, line)| {
                let Some(from) = self.entered[l] else {
                    return false;
                };
                let ends = line.ends();
                let lo = ends.partition_point(|&e| e < offset);
                let hi = ends.partition_point(|&e| e <= offset);
                lo.max(from) < hi.min(self.observed[l])
            })
    }

    /// A plain object's end (or the origin) is reached: so is whatever starts there.
    fn reach_plain(&mut self, offset: u64) {
        self.spread(vec![Reached::Plain(offset)]);
    }

    /// A point of a line is reached at its end: so is whatever starts there.
    fn reached_by_line(&mut self, offset: u64) {
        self.spread(vec![Reached::Line(offset)]);
    }

    /// Follows chains from newly reached offsets: into plain objects waiting there, and into
    /// lines with a point starting there. A plain object's end is looked up in every line; a
    /// line's end only where lines meet (within its own line, the next point simply follows).
    fn spread(&mut self, mut todo: Vec<Reached>) {
        while let Some(r) = todo.pop() {
            let x = match r {
                Reached::Plain(x) => {
                    if !self.reach.insert(x) {
                        continue;
                    }
                    for l in 0..self.lines.len() {
                        if let Some(i) = self.lines[l].entered_at(x) {
                            self.enter(l, i, x, &mut todo);
                        }
                    }
                    x
                }
                Reached::Line(x) => {
                    if let Some(v) = self.crossings.get(&x) {
                        for (l, i) in v.clone() {
                            self.enter(l, i, x, &mut todo);
                        }
                    }
                    x
                }
            };
            self.reached = self.reached.max(x);
            let waiting = self.waiting.remove(&x).into_iter().flatten();
            todo.extend(waiting.map(Reached::Plain));
        }
    }

    /// A chain reached `offset`, where point `i` of line `l` starts: every point of the line
    /// from there is reached once observed. Pushes the ends newly reached onto `todo`.
    fn enter(&mut self, l: usize, i: usize, offset: u64, todo: &mut Vec<Reached>) {
        let line = &self.lines[l];
        // Points observed before the snapshot are not usable: enter at the first usable one,
        // if it too starts here (the points between were empty).
        let i = i.max(self.usable_from[l]);
        if i >= line.len() || line.start_of(i) != offset {
            return;
        }
        let before = self.entered[l].unwrap_or(usize::MAX);
        if i >= before {
            return;
        }
        self.entered[l] = Some(i);
        let upto = before.min(self.observed[l]);
        todo.extend((i..upto).map(|j| Reached::Line(line.ends()[j])));
    }

    /// Whether the chain reaches the part's length, and if not, what is missing, worded as
    /// [`super::plan_part`] words it.
    fn verdict(&self, part: &str) -> Option<ChainError> {
        if self.reached >= self.target {
            return None;
        }
        let reached = self.reached;
        let plain = self
            .waiting
            .range((Excluded(reached), Unbounded))
            .next()
            .map(|(&s, _)| s);
        let lined = self.lines.iter().enumerate().filter_map(|(l, line)| {
            let after = line.ends().partition_point(|&e| e <= reached);
            let i = match line.start_of(0) > reached {
                true => 0,
                false => after + 1,
            };
            let i = i.max(self.usable_from[l]);
            (i < self.observed[l]).then(|| line.start_of(i))
        });
        let next = plain.into_iter().chain(lined).min();
        Some(super::plan::missing(part, reached, next, self.target))
    }
}

/// The offsets where two or more lines have a boundary, with the points that start there:
/// the only offsets at which a chain can pass from one line to another. One merge of the
/// lines' sorted boundaries.
fn crossings(lines: &[Line]) -> HashMap<u64, Vec<(usize, usize)>> {
    let mut out = HashMap::new();
    if lines.len() < 2 {
        return out;
    }
    // Boundaries of line l: its start, then each point's end (never going back).
    let at = |l: usize, k: usize| -> Option<u64> {
        match k {
            0 => Some(lines[l].start_of(0)),
            _ => lines[l].ends().get(k - 1).copied(),
        }
    };
    let mut heap: BinaryHeap<Reverse<(u64, usize, usize)>> = (0..lines.len())
        .filter_map(|l| at(l, 0).map(|x| Reverse((x, l, 0))))
        .collect();
    while let Some(Reverse((x, l, k))) = heap.pop() {
        let mut here = vec![l];
        if let Some(y) = at(l, k + 1) {
            heap.push(Reverse((y, l, k + 1)));
        }
        while let Some(&Reverse((y, m, j))) = heap.peek() {
            if y != x {
                break;
            }
            heap.pop();
            here.push(m);
            if let Some(z) = at(m, j + 1) {
                heap.push(Reverse((z, m, j + 1)));
            }
        }
        here.sort_unstable();
        here.dedup();
        if here.len() < 2 {
            continue;
        }
        let starts: Vec<(usize, usize)> = here
            .into_iter()
            .filter_map(|m| lines[m].entered_at(x).map(|i| (m, i)))
            .collect();
        if !starts.is_empty() {
            out.insert(x, starts);
        }
    }
    out
}

#[cfg(test)]
mod tests;
