//! `petrify verify`: proves, without writing anything, that every recovery point under a prefix
//! (or the one `--at-timestamp` chooses) can be rebuilt. From the keys of one listing: every key
//! under the layout is one of ours and as long as it says, every point's chain is whole, and
//! objects holding the same range agree. With `--deep`, every object is downloaded (in
//! parallel, nothing kept) and checked against its CRC-32, and each shorter retry of an upload
//! against the start of the longer one.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::Mutex;

use crate::bucket::{self, Place};
use crate::chain::{self, Generation};
use crate::error::{Error, Exit, Result};
use crate::layout::{Kind, ObjectKey};
use crate::s3::ObjectStore;
use crate::timestamp::{rfc3339_ms, unix};

use super::{choose_point, fetch};

/// What `petrify verify` is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyRequest {
    pub place: Place,
    /// Only the point `recover --at-timestamp` would choose.
    pub at_ms: Option<u64>,
    /// Download every object and check its CRC-32.
    pub deep: bool,
    /// Requests in flight at once with `deep`.
    pub parallel: usize,
}

/// `petrify verify`: prints one line per broken point and per broken object, then a summary;
/// exits 0 only when every point checked can be rebuilt and every object checked is whole.
pub fn verify(req: &VerifyRequest, store: &dyn ObjectStore, out: &mut dyn Write) -> Result<()> {
    let root = req.place.root();
    let listed = store
        .list(&root)
        .map_err(|e| Error::s3(&format!("listing {root}"), &e))?;
    let mut read = bucket::read_listing(&root, listed);
    bucket::open_indexes(store, &root, &mut read)?;
    let foreign = read.foreign;
    let damaged = read.damaged;
    // A generation marked as being deleted is no longer history: a prune cut short, that the
    // next prune finishes.
    let gens: Vec<Generation> = chain::generations(read.objects)
        .into_iter()
        .filter(|g| !read.dropping.contains(&(g.id.number, g.id.mode)))
        .collect();
    if !read.dropping.is_empty() {
        log::info!(
            "{} generation(s) marked as being deleted by a prune cut short: not checked; the \
             next prune (or persist --retain) finishes them",
            read.dropping.len()
        );
    }
    let all = chain::recovery_points(&gens);
    let points = match req.at_ms {
        None => all,
        Some(t) => vec![choose_point(&all, Some(t), &req.place)?],
    };
    let mut problems: Vec<String> = foreign
        .iter()
        .map(|(key, why)| format!("object {key}: not a readable Petrify object ({why})"))
        .collect();
    let (good, broken) = chain::check_points(&gens, points.clone());
    for b in &broken {
        problems.push(format!(
            "point {} ({}, generation {}): {}",
            rfc3339_ms(b.point.time_ms),
            unix(b.point.time_ms),
            b.point.generation.number,
            b.why
        ));
    }
    // The objects the checked points stand on: all of them, or the chosen point's chains.
    let checked: Vec<&Generation> = gens
        .iter()
        .filter(|g| points.iter().any(|p| p.generation == g.id))
        .collect();
    let mut objects: Vec<Vec<ObjectKey>> = Vec::new();
    for g in &checked {
        for (part, objs) in &g.parts {
            let objs = match req.at_ms.and(points.first()) {
                Some(p) => chain::plan_part(objs, p.time_ms).unwrap_or_default(),
                None => objs.clone(),
            };
            problems.extend(same_range_disagreements(part, g, &objs));
            objects.push(objs);
        }
    }
    // What is downloaded: each object once, a merged one for all the points it holds (their
    // CRCs were checked against its own when its index was read).
    let mut objects: Vec<ObjectKey> = objects
        .into_iter()
        .flatten()
        .map(|o| o.holder().clone())
        .collect();
    objects.sort_by_key(|o| {
        (
            o.generation,
            o.mode,
            o.part.clone(),
            o.start,
            o.end,
            o.time_ms,
        )
    });
    objects.dedup();
    problems.extend(
        damaged
            .iter()
            .map(|(k, why)| format!("object {k}: a merged object whose index is damaged: {why}")),
    );
    let mut bytes = 0;
    if req.deep {
        let (read, found) = deep(store, &root, &objects, req.parallel);
        bytes = read;
        problems.extend(found);
    }
    let write = |out: &mut dyn Write| -> io::Result<()> {
        for p in &problems {
            writeln!(out, "BROKEN {p}")?;
        }
        out.flush()
    };
    if let Err(e) = write(out)
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        return Err(Error::new(
            Exit::Io,
            format!("cannot write the report: {e}"),
        ));
    }
    let what = format!(
        "{} of {} recovery point(s) and {} object(s){} under {}",
        good.len(),
        good.len() + broken.len(),
        objects.len(),
        match req.deep {
            true => format!(" ({bytes} bytes read and checked)"),
            false => String::new(),
        },
        req.place.describe()
    );
    if problems.is_empty() {
        log::info!("verified: {what} can be rebuilt");
        return Ok(());
    }
    Err(Error::new(
        Exit::Data,
        format!(
            "{} problem(s) found (listed above); checked {what}; `petrify list` shows the \
             points that can still be recovered",
            problems.len()
        ),
    ))
}

/// Deltas of one part that hold the same range under different CRCs: two different histories
/// where there must be one. (A retried upload with more bytes starts at the same offset but
/// ends later: that is checked by `deep`.)
fn same_range_disagreements(part: &str, g: &Generation, objs: &[ObjectKey]) -> Vec<String> {
    let mut by_range: BTreeMap<(u64, u64), Vec<&ObjectKey>> = BTreeMap::new();
    for o in objs.iter().filter(|o| o.kind == Kind::Delta) {
        by_range.entry((o.start, o.end)).or_default().push(o);
    }
    by_range
        .into_iter()
        .filter_map(|((start, end), v)| {
            let first = v.first()?;
            let other = v.iter().find(|o| o.crc != first.crc)?;
            Some(format!(
                "objects {first} and {other}: generation {}, part {part}, bytes {start}..{end} \
                 held twice with different CRC-32s",
                g.id.number
            ))
        })
        .collect()
}

/// Downloads every object with at most `parallel` in flight: each must match its key's length
/// and CRC-32, and a delta that starts where a longer one of the same part does must equal the
/// longer one's first bytes. Returns the bytes read and the problems.
fn deep(
    store: &dyn ObjectStore,
    root: &str,
    objects: &[ObjectKey],
    parallel: usize,
) -> (u64, Vec<String>) {
    // Deltas by where they start in their part: a shorter one must be the longer's first bytes.
    type Start<'a> = (u64, crate::layout::Mode, &'a str, u64);
    let mut starting: BTreeMap<Start, Vec<&ObjectKey>> = BTreeMap::new();
    for o in objects.iter().filter(|o| o.kind != Kind::Snap) {
        starting
            .entry((o.generation, o.mode, &o.part, o.start))
            .or_default()
            .push(o);
    }
    let shorter = |o: &ObjectKey| -> Vec<&ObjectKey> {
        match o.kind {
            Kind::Delta | Kind::Merged | Kind::Piece => starting
                .get(&(o.generation, o.mode, o.part.as_str(), o.start))
                .map(|v| v.iter().copied().filter(|s| s.end < o.end).collect())
                .unwrap_or_default(),
            Kind::Snap => Vec::new(),
        }
    };
    // For each object, the lengths at which shorter deltas starting with it end.
    let marks: Vec<Vec<u64>> = objects
        .iter()
        .map(|o| {
            let mut m: Vec<u64> = shorter(o).iter().map(|s| s.len()).collect();
            m.sort_unstable();
            m.dedup();
            m
        })
        .collect();
    let next = Mutex::new(0usize);
    // Per object (by index): the CRC-32 at each mark, or what is wrong with it.
    type Found = Vec<(usize, std::result::Result<Vec<u32>, String>)>;
    let found: Mutex<Found> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..parallel.max(1).min(objects.len()) {
            scope.spawn(|| {
                loop {
                    let i = {
                        let Ok(mut n) = next.lock() else { return };
                        *n += 1;
                        *n - 1
                    };
                    let Some(o) = objects.get(i) else { return };
                    let r = fetch::crc_marks(store, root, o, &marks[i]).map_err(|e| e.message);
                    if let Ok(mut f) = found.lock() {
                        f.push((i, r));
                    }
                }
            });
        }
    });
    let mut results = found.into_inner().unwrap_or_default();
    results.sort_by_key(|(i, _)| *i);
    let mut bytes = 0;
    let mut problems = Vec::new();
    for (i, r) in results {
        let o = &objects[i];
        match r {
            Err(why) => problems.push(why),
            Ok(crcs) => {
                bytes += o.len();
                for (len, crc) in marks[i].iter().zip(crcs) {
                    for s in shorter(o)
                        .iter()
                        .filter(|s| s.len() == *len && s.crc != crc)
                    {
                        problems.push(format!(
                            "objects {s} and {o} disagree: the first {len} bytes differ (a \
                             retried upload must repeat the bytes it extends)"
                        ));
                    }
                }
            }
        }
    }
    (bytes, problems)
}
