//! `petrify list`: the recovery points that can be recovered, all of them or a window (`--since`,
//! `--until`, `--last`). With a window, generations are read one folder at a time and reading
//! stops as soon as no further generation can hold a point of the window.

use std::collections::VecDeque;
use std::io::{self, Write};

use crate::bucket::{self, Place};
use crate::chain::{self, BrokenPoint, GenId, RecoveryPoint, Stored};
use crate::error::{Error, Exit, Result};
use crate::layout;
use crate::s3::ObjectStore;
use crate::timestamp::{Stamper, rfc3339_ms, unix};

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
/// from the keys of the listing and the merged objects' indexes, streamed: a month of points
/// is never held as a table.
pub fn list(req: &ListRequest, store: &dyn ObjectStore, out: &mut dyn Write) -> Result<()> {
    let root = req.place.root();
    let window = &req.window;
    let (gens, damaged) = read_generations(store, &root, window)?;
    // With `--last`, a first walk finds the oldest point shown: broken points before it are
    // not named either.
    let from = window.last.and_then(|n| oldest_of_last(&gens, window, n));
    let shown = |p: &RecoveryPoint| {
        window.holds_time(p.time_ms)
            && (window.last.is_none() || from.is_none_or(|f| (p.generation, p.time_ms) >= f))
    };
    let mut listed = 0usize;
    let mut broken: Vec<BrokenPoint> = Vec::new();
    let mut broken_count = 0usize;
    let mut sink = io::BufWriter::with_capacity(64 * 1024, out);
    let mut failed: Option<io::Error> = None;
    let mut stamper = Stamper::default();
    for g in &gens {
        chain::walk(g.id, &g.view(), |p, why| {
            if !shown(&p) {
                return;
            }
            let Some(why) = why else {
                listed += 1;
                if failed.is_none()
                    && let Err(e) = stamper.write(&mut sink, p.time_ms).and_then(|()| {
                        writeln!(
                            sink,
                            "  {}.{:03}  {}  {}",
                            p.time_ms / 1000,
                            p.time_ms % 1000,
                            p.generation.number,
                            p.bytes
                        )
                    })
                {
                    failed = Some(e);
                }
                return;
            };
            broken_count += 1;
            if broken.len() < BROKEN_SHOWN {
                broken.push(BrokenPoint {
                    point: p,
                    why: why.clone(),
                });
            }
        });
    }
    if failed.is_none()
        && let Err(e) = sink.flush()
    {
        failed = Some(e);
    }
    match failed {
        None => {}
        // `petrify list | head` is not an error.
        Some(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Some(e) => return Err(Error::new(Exit::Io, format!("cannot write the list: {e}"))),
    }
    if listed == 0 && broken_count == 0 {
        if window.is_all() {
            log::warn!("no recovery points under {}", req.place.describe());
        } else {
            log::warn!(
                "no recovery points in that window under {}",
                req.place.describe()
            );
        }
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
    if broken_count == 0 && damaged.is_empty() {
        return Ok(());
    }
    if broken_count == 0 {
        return Err(Error::new(
            Exit::Data,
            format!(
                "the {listed} point(s) listed under {} can be recovered{unreadable}",
                req.place.describe()
            ),
        ));
    }
    for b in &broken {
        eprintln!(
            "petrify: point {} ({}, generation {}) cannot be recovered: {}",
            rfc3339_ms(b.point.time_ms),
            unix(b.point.time_ms),
            b.point.generation.number,
            b.why
        );
    }
    if broken_count > broken.len() {
        eprintln!(
            "petrify: ... and {} more point(s) that cannot be recovered",
            broken_count - broken.len()
        );
    }
    Err(Error::new(
        Exit::Data,
        format!(
            "{broken_count} of {} recovery point(s) under {} cannot be recovered: objects of \
             their chains are missing from the bucket (a lifecycle rule, or a deletion by hand); \
             the {listed} listed can{unreadable}",
            broken_count + listed,
            req.place.describe(),
        ),
    ))
}

/// The oldest of the newest `n` good points in `window`: where `--last n` starts.
fn oldest_of_last(gens: &[Stored], window: &Window, n: usize) -> Option<(GenId, u64)> {
    let mut last: VecDeque<(GenId, u64)> = VecDeque::new();
    for g in gens {
        chain::walk(g.id, &g.view(), |p, why| {
            if why.is_none() && window.holds_time(p.time_ms) && n > 0 {
                if last.len() == n {
                    last.pop_front();
                }
                last.push_back((p.generation, p.time_ms));
            }
        });
    }
    last.front().copied()
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
) -> Result<(Vec<Stored>, Vec<layout::ObjectKey>)> {
    if window.is_all() {
        let found = bucket::survey_stored(store, root, root)?;
        bucket::warn_foreign(root, &found.foreign);
        let damaged = found.damaged.into_iter().map(|(k, _)| k).collect();
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
        let found = bucket::survey_stored(store, root, &dir)?;
        bucket::warn_foreign(root, &found.foreign);
        damaged.extend(found.damaged.into_iter().map(|(k, _)| k));
        for g in found.generations {
            let (mut first, mut newest, mut good) = (None, None, 0usize);
            chain::walk(g.id, &g.view(), |p, why| {
                first.get_or_insert(p.time_ms);
                newest = Some(p.time_ms);
                if why.is_none() && window.holds_time(p.time_ms) {
                    good += 1;
                }
            });
            let (Some(first), Some(newest)) = (first, newest) else {
                continue;
            };
            if newest_first && window.since_ms.is_some_and(|s| newest < s) {
                return Ok((sorted(gens), damaged));
            }
            if !newest_first && window.until_ms.is_some_and(|u| first > u) {
                return Ok((sorted(gens), damaged));
            }
            shown += good;
            gens.push(g);
        }
        if newest_first && window.last.is_some_and(|n| shown >= n) {
            break;
        }
    }
    Ok((sorted(gens), damaged))
}

fn sorted(mut gens: Vec<Stored>) -> Vec<Stored> {
    gens.sort_by_key(|g| g.id);
    gens
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{FILE_PART, Kind, Mode, ObjectKey};
    use crate::s3::mem::MemStore;

    /// Stores a one-byte delta at `start` of a `file` generation, observed at `time_ms`.
    fn put_byte(store: &MemStore, generation: u64, start: u64, time_ms: u64) {
        let k = ObjectKey {
            generation,
            mode: Mode::File,
            part: FILE_PART.into(),
            start,
            end: start + 1,
            time_ms,
            crc: crc32fast::hash(b"x"),
            kind: Kind::Delta,
            seal: crate::layout::Seal::Plain,
            stored: (0, 1),
            within: None,
        };
        store
            .put(&k.key("p/petrify-v1/"), &mut &b"x"[..], 1, None)
            .unwrap();
    }

    /// `petrify list` of prefix `p` with `window`: what it printed, and how it ended.
    fn run(store: &MemStore, window: Window) -> (String, Result<()>) {
        let req = ListRequest {
            place: Place {
                bucket: "b".into(),
                prefix: "p".into(),
            },
            window,
        };
        let mut out = Vec::new();
        let r = list(&req, store, &mut out);
        (String::from_utf8(out).unwrap(), r)
    }

    /// Generation 1 breaks at its third point (an object deleted by hand); generation 2 is
    /// whole. Every window names the broken points it covers, and only those.
    #[test]
    fn a_window_names_only_the_broken_points_it_covers() {
        let store = MemStore::new();
        let put = |generation, start, time_ms| put_byte(&store, generation, start, time_ms);
        put(1, 0, 1000);
        put(1, 1, 2000);
        put(1, 3, 4000); // 2..3, observed at 3000, is gone
        put(2, 0, 5000);
        put(2, 1, 6000);
        let run = |window: Window| {
            let (out, r) = run(&store, window);
            (out.lines().count(), r.map_err(|e| e.message))
        };
        let all = run(Window::default());
        assert_eq!(all.0, 4);
        let e = all.1.unwrap_err();
        assert!(e.starts_with("1 of 5 recovery point(s)"), "{e}");
        // The newest two are whole: nothing broken is among them.
        let last = Window {
            last: Some(2),
            ..Window::default()
        };
        assert_eq!(run(last), (2, Ok(())));
        let last = Window {
            last: Some(3),
            ..Window::default()
        };
        assert!(run(last).1.unwrap_err().starts_with("1 of 4"));
        let until = Window {
            until_ms: Some(2000),
            ..Window::default()
        };
        assert_eq!(run(until), (2, Ok(())));
    }

    /// Three generations of three points each (times 1000g+1..3): each window reads only the
    /// generations it needs, counted in requests to the store.
    #[test]
    fn a_window_reads_only_the_generations_it_needs() {
        use std::sync::atomic::Ordering;

        let store = MemStore::new();
        for g in 1..=3u64 {
            for i in 0..3u64 {
                put_byte(&store, g, i, 1_000_000 * g + 1000 * (i + 1));
            }
        }
        let run = |window: Window| {
            store.requests.store(0, Ordering::SeqCst);
            let (out, r) = run(&store, window);
            assert!(r.is_ok());
            let gens: Vec<String> = out
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
            seal: crate::layout::Seal::Plain,
            stored: (0, end - start),
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
            let (out, r) = run(&store, window);
            let e = r.unwrap_err();
            assert_eq!(e.exit, Exit::Data, "{}", e.message);
            assert!(e.message.contains("damaged index"), "{}", e.message);
            // The first point, and the merged object's last one (its key vouches for all of
            // its bytes, read whole); the point inside it is not offered.
            let lines: Vec<&str> = out.lines().collect();
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
