//! `petrify list`: the recovery points that can be recovered, all of them or a window (`--since`,
//! `--until`, `--last`). With a window, generations are read one folder at a time and reading
//! stops as soon as no further generation can hold a point of the window.

use std::io::{self, Write};

use crate::bucket::{self, Place};
use crate::chain::{self, BrokenPoint, Generation, RecoveryPoint};
use crate::error::{Error, Exit, Result};
use crate::layout;
use crate::s3::ObjectStore;
use crate::timestamp::{rfc3339_ms, unix};

/// How many broken points `list` names one by one before summing up the rest.
const BROKEN_SHOWN: usize = 10;

/// Which points to show: those at or after `since_ms`, at or before `until_ms`, and of those
/// the newest `last`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    pub last: Option<usize>,
}

impl Window {
    fn is_all(&self) -> bool {
        *self == Window::default()
    }

    fn holds_time(&self, t: u64) -> bool {
        self.since_ms.is_none_or(|s| t >= s) && self.until_ms.is_none_or(|u| t <= u)
    }

    /// The points of `good` (in list order) and `broken` this window shows. Broken points are
    /// shown (on stderr) when their time is in the window and, with `last`, when they are not
    /// older than the first good point shown.
    fn select(
        &self,
        good: Vec<RecoveryPoint>,
        broken: Vec<BrokenPoint>,
    ) -> (Vec<RecoveryPoint>, Vec<BrokenPoint>) {
        let mut good: Vec<RecoveryPoint> = good
            .into_iter()
            .filter(|p| self.holds_time(p.time_ms))
            .collect();
        if let Some(n) = self.last {
            good.drain(..good.len().saturating_sub(n));
        }
        let from = good.first().map(|p| (p.generation, p.time_ms));
        let broken = broken
            .into_iter()
            .filter(|b| self.holds_time(b.point.time_ms))
            .filter(|b| {
                self.last.is_none()
                    || from.is_none_or(|f| (b.point.generation, b.point.time_ms) >= f)
            })
            .collect();
        (good, broken)
    }
}

/// What `petrify list` is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    pub place: Place,
    pub window: Window,
}

/// `petrify list`: one line per recovery point that can be recovered, in order. Points whose
/// chain is broken (an object deleted by a lifecycle rule or by hand) are not listed: they are
/// named on stderr, and the command fails with status 65 after listing the good ones. Decided
/// from the keys of the listing: no extra request.
pub fn list(req: &ListRequest, store: &dyn ObjectStore, out: &mut dyn Write) -> Result<()> {
    let root = req.place.root();
    let (gens, damaged) = read_generations(store, &root, &req.window)?;
    let (good, broken) = chain::check_points(&gens, chain::recovery_points(&gens));
    let (points, broken) = req.window.select(good, broken);
    if points.is_empty() && broken.is_empty() {
        if req.window.is_all() {
            log::warn!("no recovery points under {}", req.place.describe());
        } else {
            log::warn!(
                "no recovery points in that window under {}",
                req.place.describe()
            );
        }
    }
    let write = |out: &mut dyn Write| -> io::Result<()> {
        for p in &points {
            writeln!(
                out,
                "{}  {}  {}  {}",
                rfc3339_ms(p.time_ms),
                unix(p.time_ms),
                p.generation.number,
                p.bytes
            )?;
        }
        out.flush()
    };
    match write(out) {
        Ok(()) => {}
        // `petrify list | head` is not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(Error::new(Exit::Io, format!("cannot write the list: {e}"))),
    }
    // A merged object whose index cannot be read hides the points it holds: the list is
    // short of them, which must not look like a whole history.
    let unreadable = match damaged.first() {
        None => String::new(),
        Some(k) => format!(
            "; {} merged object(s) have a damaged index and the points they hold are not \
             listed (first {k}; `petrify verify` names them)",
            damaged.len()
        ),
    };
    if broken.is_empty() && damaged.is_empty() {
        return Ok(());
    }
    if broken.is_empty() {
        return Err(Error::new(
            Exit::Data,
            format!(
                "the {} point(s) listed under {} can be recovered{unreadable}",
                points.len(),
                req.place.describe()
            ),
        ));
    }
    for b in broken.iter().take(BROKEN_SHOWN) {
        eprintln!(
            "petrify: point {} ({}, generation {}) cannot be recovered: {}",
            rfc3339_ms(b.point.time_ms),
            unix(b.point.time_ms),
            b.point.generation.number,
            b.why
        );
    }
    if broken.len() > BROKEN_SHOWN {
        eprintln!(
            "petrify: ... and {} more point(s) that cannot be recovered",
            broken.len() - BROKEN_SHOWN
        );
    }
    Err(Error::new(
        Exit::Data,
        format!(
            "{} of {} recovery point(s) under {} cannot be recovered: objects of \
             their chains are missing from the bucket (a lifecycle rule, or a deletion by hand); \
             the {} listed can{unreadable}",
            broken.len(),
            broken.len() + points.len(),
            req.place.describe(),
            points.len()
        ),
    ))
}

/// The generations `window` needs. All of them, in one listing, without a window. With one, the
/// generation folders are listed (one short request), then read one at a time: newest first
/// when the window has `since` or `last`, stopping at the first generation whose newest point is
/// before `since`, or once `last` good points are in hand; oldest first with only `until`,
/// stopping at the first generation whose oldest point is after it. Generations follow each other
/// in time (persist finishes one before it starts the next); the one exception, an older
/// generation labelled by a clock that was ahead, holds points `recover` never chooses over the
/// newer generation anyway.
fn read_generations(
    store: &dyn ObjectStore,
    root: &str,
    window: &Window,
) -> Result<(Vec<Generation>, Vec<layout::ObjectKey>)> {
    if window.is_all() {
        let found = bucket::survey(store, root)?;
        let live = |k: &&layout::ObjectKey| {
            found
                .generations
                .iter()
                .any(|g| (g.id.number, g.id.mode) == (k.generation, k.mode))
        };
        let damaged = found.damaged.iter().filter(live).cloned().collect();
        return Ok((found.generations, damaged));
    }
    let folders = store
        .list_folders(root)
        .map_err(|e| Error::s3(&format!("listing {root}"), &e))?;
    let mut dirs: Vec<(u64, String)> = folders
        .into_iter()
        .filter_map(|f| {
            let name = f.strip_prefix(root)?.strip_suffix('/')?;
            let (number, _) = layout::parse_generation_dir(name).ok()?;
            Some((number, f))
        })
        .collect();
    dirs.sort();
    let newest_first = window.since_ms.is_some() || window.last.is_some();
    if newest_first {
        dirs.reverse();
    }
    let mut gens = Vec::new();
    let mut damaged = Vec::new();
    let mut shown = 0usize;
    for (_, dir) in dirs {
        let listed = store
            .list(&dir)
            .map_err(|e| Error::s3(&format!("listing {dir}"), &e))?;
        let (objects, unreadable) = bucket::parse_listing(store, root, listed)?;
        damaged.extend(unreadable);
        for g in chain::generations(objects) {
            let one = std::slice::from_ref(&g);
            let points = chain::recovery_points(one);
            let (Some(first), Some(newest)) = (points.first(), points.last()) else {
                continue;
            };
            if newest_first && window.since_ms.is_some_and(|s| newest.time_ms < s) {
                return Ok((sorted(gens), damaged));
            }
            if !newest_first && window.until_ms.is_some_and(|u| first.time_ms > u) {
                return Ok((sorted(gens), damaged));
            }
            let (good, _) = chain::check_points(one, points);
            shown += good.iter().filter(|p| window.holds_time(p.time_ms)).count();
            gens.push(g);
        }
        if newest_first && window.last.is_some_and(|n| shown >= n) {
            break;
        }
    }
    Ok((sorted(gens), damaged))
}

fn sorted(mut gens: Vec<Generation>) -> Vec<Generation> {
    gens.sort_by_key(|g| g.id);
    gens
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{ChainError, GenId};
    use crate::layout::Mode;

    fn pt(generation: u64, time_ms: u64) -> RecoveryPoint {
        RecoveryPoint {
            time_ms,
            generation: GenId {
                number: generation,
                mode: Mode::File,
            },
            bytes: time_ms,
        }
    }

    fn times(v: &[RecoveryPoint]) -> Vec<u64> {
        v.iter().map(|p| p.time_ms).collect()
    }

    #[test]
    fn a_window_keeps_times_in_range_then_the_newest_n() {
        let good: Vec<_> = [10, 20, 30, 40, 50].iter().map(|&t| pt(1, t)).collect();
        let w = |since, until, last| Window {
            since_ms: since,
            until_ms: until,
            last,
        };
        let sel = |win: Window| times(&win.select(good.clone(), vec![]).0);
        assert_eq!(sel(w(None, None, None)), [10, 20, 30, 40, 50]);
        assert_eq!(sel(w(Some(20), None, None)), [20, 30, 40, 50]);
        assert_eq!(sel(w(None, Some(30), None)), [10, 20, 30]);
        assert_eq!(sel(w(Some(20), Some(40), Some(2))), [30, 40]);
        assert_eq!(sel(w(None, None, Some(9))), [10, 20, 30, 40, 50]);
        assert_eq!(sel(w(Some(60), None, None)), Vec::<u64>::new());
        // Broken points are named only inside the window.
        let broken = vec![
            BrokenPoint {
                point: pt(1, 15),
                why: ChainError("gap".into()),
            },
            BrokenPoint {
                point: pt(1, 45),
                why: ChainError("gap".into()),
            },
        ];
        let (_, b) = w(None, None, Some(2)).select(good.clone(), broken.clone());
        assert_eq!(b.iter().map(|b| b.point.time_ms).collect::<Vec<_>>(), [45]);
        let (_, b) = w(None, Some(20), None).select(good, broken);
        assert_eq!(b.iter().map(|b| b.point.time_ms).collect::<Vec<_>>(), [15]);
    }

    /// Three generations of three points each (times 1000g+1..3): each window reads only the
    /// generations it needs, counted in requests to the store.
    #[test]
    fn a_window_reads_only_the_generations_it_needs() {
        use crate::layout::{FILE_PART, Kind, ObjectKey};
        use crate::s3::mem::MemStore;
        use std::sync::atomic::Ordering;

        let store = MemStore::new();
        for g in 1..=3u64 {
            for i in 0..3u64 {
                let k = ObjectKey {
                    generation: g,
                    mode: Mode::File,
                    part: FILE_PART.into(),
                    start: i,
                    end: i + 1,
                    time_ms: 1_000_000 * g + 1000 * (i + 1),
                    crc: crc32fast::hash(b"x"),
                    kind: Kind::Delta,
                    within: None,
                };
                store
                    .put(&k.key("p/petrify-v1/"), &mut &b"x"[..], 1, None)
                    .unwrap();
            }
        }
        let run = |window: Window| {
            store.requests.store(0, Ordering::SeqCst);
            let req = ListRequest {
                place: Place {
                    bucket: "b".into(),
                    prefix: "p".into(),
                },
                window,
            };
            let mut out = Vec::new();
            list(&req, &store, &mut out).unwrap();
            let gens: Vec<String> = String::from_utf8(out)
                .unwrap()
                .lines()
                .map(|l| l.split_whitespace().nth(2).unwrap().to_string())
                .collect();
            (gens.join(","), store.requests.load(Ordering::SeqCst))
        };
        let w = Window::default();
        assert_eq!(run(w), ("1,1,1,2,2,2,3,3,3".into(), 1));
        // The folders, then generation 3 only.
        let last2 = Window { last: Some(2), ..w };
        assert_eq!(run(last2), ("3,3".into(), 2));
        // Generations 3 and 2, then 1 to see that it ends before the window.
        let since = Window {
            since_ms: Some(2_002_000),
            ..w
        };
        assert_eq!(run(since), ("2,2,3,3,3".into(), 4));
        // Generation 1, then 2 to see that it starts after the window.
        let until = Window {
            until_ms: Some(1_002_000),
            ..w
        };
        assert_eq!(run(until), ("1,1".into(), 3));
    }

    /// The newest object, a merged one whose index is damaged: nothing after it breaks, but
    /// its points are missing from the list, and list says so with status 65 (in both ways
    /// of reading the prefix); prune deletes it with its generation.
    #[test]
    fn a_damaged_index_at_the_end_is_not_a_whole_history() {
        use crate::layout::{FILE_PART, Kind, ObjectKey};
        use crate::s3::mem::MemStore;

        let store = MemStore::new();
        let root = "p/petrify-v1/";
        let key = |start: u64, end: u64, time_ms: u64, data: &[u8], kind| ObjectKey {
            generation: 1,
            mode: Mode::File,
            part: FILE_PART.into(),
            start,
            end,
            time_ms,
            crc: crc32fast::hash(data),
            kind,
            within: None,
        };
        let first = key(0, 4, 1000, b"one\n", Kind::Delta);
        store
            .put(&first.key(root), &mut &b"one\n"[..], 4, None)
            .unwrap();
        let merged = key(4, 8, 3000, b"two\n", Kind::Merged);
        let body = b"two\npetrify-index 1\n8 2000 00000000\n";
        store
            .put(&merged.key(root), &mut &body[..], body.len() as u64, None)
            .unwrap();
        for window in [
            Window::default(),
            Window {
                last: Some(5),
                ..Window::default()
            },
        ] {
            let req = ListRequest {
                place: Place {
                    bucket: "b".into(),
                    prefix: "p".into(),
                },
                window,
            };
            let mut out = Vec::new();
            let e = list(&req, &store, &mut out).unwrap_err();
            assert_eq!(e.exit, Exit::Data, "{}", e.message);
            assert!(e.message.contains("damaged index"), "{}", e.message);
            // The first point, and the merged object's last one (its key vouches for all of
            // its bytes, read whole); the point inside it is not offered.
            let lines: Vec<String> = String::from_utf8(out)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect();
            assert_eq!(lines.len(), 2, "{lines:?}");
            assert!(lines[1].contains(" 3.000 "), "{lines:?}");
        }
        // A newer generation, and retention past everything: generation 1 goes, the damaged
        // object with it.
        let mut next = key(0, 4, 5000, b"new\n", Kind::Delta);
        next.generation = 2;
        store
            .put(&next.key(root), &mut &b"new\n"[..], 4, None)
            .unwrap();
        crate::prune::apply(&store, root, u64::MAX, "here")
            .unwrap_or_else(|e| panic!("{}", e.message));
        assert!(
            store.objects().keys().all(|k| !k.ends_with(".merged")),
            "{:?}",
            store.objects().keys()
        );
    }
}
