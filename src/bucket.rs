//! What the bucket holds: one paginated listing of a prefix, parsed into generations. The only
//! place that turns listed keys into [`ObjectKey`]s, for persist, recover and list alike.

use std::collections::BTreeSet;

use crate::chain::{self, Generation};
use crate::error::{Error, Result};
use crate::layout::{self, Kind, Mode, ObjectKey};
use crate::s3::ObjectStore;

/// Where a backup lives: a bucket and a prefix in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub bucket: String,
    pub prefix: String,
}

impl Place {
    /// The key prefix every object of the layout lives under (see [`layout::root`]).
    pub fn root(&self) -> String {
        layout::root(&self.prefix)
    }

    /// `s3://BUCKET/ROOT`, for messages.
    pub fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.root())
    }
}

/// What a listing found.
pub struct Bucketed {
    pub generations: Vec<Generation>,
    /// Generations marked as being deleted by retention (see [`layout::DROPPING`]): not part of
    /// the history any more; only prune looks at them, to finish deleting them.
    pub dropping: Vec<Generation>,
    /// The next unused generation number.
    pub next_number: u64,
    /// Merged objects whose index could not be used (their points are not offered).
    pub damaged: Vec<ObjectKey>,
}

/// Lists the prefix once. A permanent error (credentials, bucket) is fatal to the caller.
pub fn survey(store: &dyn ObjectStore, root: &str) -> Result<Bucketed> {
    survey_for(store, root, Indexes::All)
}

/// Which merged objects' indexes a reader reads (one GET each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Indexes {
    /// Every one: each point is listed (list, verify, persist).
    All,
    /// Only what recovering the newest point at or before this time (the newest of all with
    /// `None`) needs: in each part, the first merged object observed after it, inside which the
    /// point may lie. Every other merged object is used whole, as one object (its last point,
    /// the time in its key, is a point like any other), so recovering costs a GET per object
    /// in the chain and at most one per part for an index.
    Upto(Option<u64>),
}

/// Lists the prefix once, reading the indexes `need` says.
pub fn survey_for(store: &dyn ObjectStore, root: &str, need: Indexes) -> Result<Bucketed> {
    let listed = store
        .list(root)
        .map_err(|e| Error::s3(&format!("listing {root}"), &e))?;
    let mut read = read_listing(root, listed);
    if let Indexes::Upto(at) = need {
        keep_whole(&mut read, at);
    }
    open_indexes(store, root, &mut read);
    warn_foreign(root, &read.foreign);
    let all = chain::generations(read.objects);
    let next_number = all.iter().map(|g| g.id.number).max().unwrap_or(0) + 1;
    let (dropping, generations) = all
        .into_iter()
        .partition(|g| read.dropping.contains(&(g.id.number, g.id.mode)));
    Ok(Bucketed {
        generations,
        dropping,
        next_number,
        damaged: read.damaged.into_iter().map(|(k, _)| k).collect(),
    })
}

/// Parses a listing into our keys (those of generations being deleted left out), warning once
/// about keys that are not ours (they are ignored, never touched) and about objects whose size
/// disagrees with their key. Also returns the merged objects whose index cannot be used.
pub fn parse_listing(
    store: &dyn ObjectStore,
    root: &str,
    listed: Vec<crate::s3::Listed>,
) -> (Vec<ObjectKey>, Vec<ObjectKey>) {
    let mut read = read_listing(root, listed);
    open_indexes(store, root, &mut read);
    warn_foreign(root, &read.foreign);
    let live = |o: &ObjectKey| !read.dropping.contains(&(o.generation, o.mode));
    let damaged = read
        .damaged
        .iter()
        .map(|(k, _)| k.clone())
        .filter(live)
        .collect();
    let objects = read.objects.iter().filter(|o| live(o)).cloned().collect();
    (objects, damaged)
}

fn warn_foreign(root: &str, foreign: &[(String, &'static str)]) {
    if let Some((key, why)) = foreign.first() {
        log::warn!(
            "ignoring {} object(s) under {root} that are not Petrify objects, first {key:?} ({why})",
            foreign.len()
        );
    }
}

/// A listing, sorted out.
pub struct Read {
    /// Every key of ours, those of generations being deleted included.
    pub objects: Vec<ObjectKey>,
    /// Each key that is not one of ours (or whose size disagrees with its key), and why.
    pub foreign: Vec<(String, &'static str)>,
    /// Generations marked as being deleted.
    pub dropping: BTreeSet<(u64, Mode)>,
    /// Merged objects, with their size in the listing (their bytes, then their index), until
    /// [`open_indexes`] has read them into `objects`.
    pub merged: Vec<(ObjectKey, u64)>,
    /// Merged objects whose index cannot be used, and why: their points are not offered.
    pub damaged: Vec<(ObjectKey, String)>,
}

/// Sorts a listing into our keys, marks of generations being deleted, and the rest.
pub fn read_listing(root: &str, listed: Vec<crate::s3::Listed>) -> Read {
    let mut read = Read {
        objects: Vec::new(),
        foreign: Vec::new(),
        dropping: BTreeSet::new(),
        merged: Vec::new(),
        damaged: Vec::new(),
    };
    for l in listed {
        let rel = l.key.strip_prefix(root).unwrap_or(&l.key);
        if rel == crate::lease::LEASE_NAME {
            continue;
        }
        if let Some(g) = layout::parse_dropping(rel) {
            read.dropping.insert(g);
            continue;
        }
        match layout::parse(rel) {
            Ok(k) if k.kind == Kind::Merged && l.size > k.len() => read.merged.push((k, l.size)),
            Ok(k) if k.kind != Kind::Merged && k.len() == l.size => read.objects.push(k),
            Ok(_) => read
                .foreign
                .push((l.key, "its size does not match its key")),
            Err(e) => read.foreign.push((l.key, e.0)),
        }
    }
    read
}

/// Moves every merged object whose index recovering as of `at` does not need into
/// `read.objects`, whole (see [`Indexes::Upto`]).
fn keep_whole(read: &mut Read, at: Option<u64>) {
    let mut merged = std::mem::take(&mut read.merged);
    merged.sort_by(|(a, _), (b, _)| {
        (a.generation, a.mode, &a.part, a.start).cmp(&(b.generation, b.mode, &b.part, b.start))
    });
    let mut seen_after: BTreeSet<(u64, Mode, String)> = BTreeSet::new();
    for (k, size) in merged {
        let first_after = at.is_some_and(|t| k.time_ms > t)
            && seen_after.insert((k.generation, k.mode, k.part.clone()));
        match first_after {
            true => read.merged.push((k, size)),
            false => read.objects.push(k),
        }
    }
}

/// Reads the index at the end of every merged object (at most [`INDEX_READERS`] at once) and
/// puts each of its points into `read.objects`. An index that cannot be read or does not agree
/// with its key is left out, with a WARN, into `read.damaged`: the points it held then show as
/// missing bytes, never as wrong ones. A merged object gone since the listing (compaction
/// replaced it) is simply left out.
pub fn open_indexes(store: &dyn ObjectStore, root: &str, read: &mut Read) {
    // A generation being deleted shows no point: its merged objects are only keys to delete.
    let (merged, dropping): (Vec<_>, Vec<_>) = std::mem::take(&mut read.merged)
        .into_iter()
        .partition(|(k, _)| !read.dropping.contains(&(k.generation, k.mode)));
    read.objects.extend(dropping.into_iter().map(|(k, _)| k));
    if merged.is_empty() {
        return;
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    type Opened = (usize, std::result::Result<Vec<ObjectKey>, String>);
    let results: std::sync::Mutex<Vec<Opened>> = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..INDEX_READERS.min(merged.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((k, size)) = merged.get(i) else {
                        return;
                    };
                    let r = read_index(store, root, k, *size);
                    if let Ok(mut v) = results.lock() {
                        v.push((i, r));
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(i, _)| *i);
    for (i, r) in results {
        let (k, _) = &merged[i];
        match r {
            Ok(pieces) => read.objects.extend(pieces),
            Err(why) if why.is_empty() => {}
            Err(why) => {
                log::warn!("merged object {k}: {why}; the points it holds are not offered");
                read.damaged.push((k.clone(), why));
            }
        }
    }
}

/// Indexes read at once: each is one small ranged GET that waits on latency.
const INDEX_READERS: usize = 16;

/// The points of one merged object. `Err("")`: it is gone (replaced since the listing).
fn read_index(
    store: &dyn ObjectStore,
    root: &str,
    k: &ObjectKey,
    size: u64,
) -> std::result::Result<Vec<ObjectKey>, String> {
    use std::io::Read as _;
    let key = k.key(root);
    let attempt = || -> std::result::Result<Vec<u8>, crate::s3::S3Error> {
        let mut body = store.get_range(&key, k.len(), size)?;
        let mut text = Vec::new();
        body.reader
            .by_ref()
            .take(size - k.len())
            .read_to_end(&mut text)
            .map_err(|e| crate::s3::S3Error::Network(format!("reading {k}: {e}")))?;
        Ok(text)
    };
    let text = match crate::s3::retry(4, attempt) {
        Ok(t) => t,
        Err(crate::s3::S3Error::Status { status: 404, .. }) => return Err(String::new()),
        Err(e) => return Err(format!("its index cannot be read ({e})")),
    };
    let entries = layout::index::parse(&text, k)?;
    Ok(layout::index::pieces(
        &std::sync::Arc::new(k.clone()),
        &entries,
    ))
}
