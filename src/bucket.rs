//! What the bucket holds: one paginated listing of a prefix, parsed into generations. The only
//! place that turns listed keys into [`ObjectKey`]s, for persist, recover and list alike.

use std::collections::BTreeSet;

use crate::chain::{self, Generation};
use crate::error::{Error, Result};
use crate::layout::index::Line;
use crate::layout::{self, Kind, Mode, ObjectKey};
use crate::s3::{ObjectStore, S3Error};

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
    /// Merged objects whose index could not be used (their points are not offered), and why.
    pub damaged: Vec<(ObjectKey, String)>,
    /// Keys that are not ours, and why (warned about once).
    pub foreign: Vec<(String, &'static str)>,
}

/// Lists the prefix once and reads every merged object's index: the whole view of the bucket,
/// the one list, verify and persist plan from. A permanent error (credentials, bucket) is fatal
/// to the caller.
pub fn survey(store: &dyn ObjectStore, root: &str) -> Result<Bucketed> {
    survey_for(store, root, Indexes::All)
}

/// The bucket as stored, for the readers that walk every point (`list`, `verify`): merged
/// objects stay lines of index entries (see [`chain::Stored`]).
pub struct StoredBucket {
    /// Generations not being deleted, oldest first.
    pub generations: Vec<chain::Stored>,
    /// How many generations are marked as being deleted (not shown, not checked).
    pub dropping: usize,
    /// Merged objects of those generations whose index cannot be used, and why.
    pub damaged: Vec<(ObjectKey, String)>,
    /// Keys that are not ours, and why.
    pub foreign: Vec<(String, &'static str)>,
}

/// Lists `dir` (the root, or one generation's folder under it) and reads every index, keeping
/// merged objects as lines.
pub fn survey_stored(store: &dyn ObjectStore, root: &str, dir: &str) -> Result<StoredBucket> {
    let read = settled(store, root, dir, Indexes::All)?;
    let dropping = read.dropping;
    let live = |o: &ObjectKey| !dropping.contains(&(o.generation, o.mode));
    let generations = chain::stored(read.objects, read.lines)
        .into_iter()
        .filter(|g| !dropping.contains(&(g.id.number, g.id.mode)))
        .collect();
    Ok(StoredBucket {
        generations,
        dropping: dropping.len(),
        damaged: read.damaged.into_iter().filter(|(k, _)| live(k)).collect(),
        foreign: read.foreign,
    })
}

/// Listings taken at most, one after the other, while merged objects vanish under them.
const LISTINGS: u32 = 4;

/// `dir` listed, and the indexes `need` says read. A merged object that is gone by the time
/// its index is read was replaced by a merge since the listing (a persist compacting the
/// prefix), and the objects it merged may be gone too: the listing is then stale, so it is
/// taken again, a few times, before the reader judges points from it.
fn settled(store: &dyn ObjectStore, root: &str, dir: &str, need: Indexes) -> Result<Listing> {
    let mut attempt = 1;
    loop {
        let listed = store
            .list(dir)
            .map_err(|e| Error::s3(&format!("listing {dir}"), &e))?;
        let mut read = read_listing(root, listed);
        if let Indexes::Upto(at) = need {
            keep_whole(&mut read, at);
        }
        open_indexes(store, root, &mut read)?;
        if read.gone == 0 || attempt >= LISTINGS {
            return Ok(read);
        }
        log::debug!(
            "{} merged object(s) replaced since the listing of {dir}: listing again",
            read.gone
        );
        attempt += 1;
    }
}

/// Which merged objects' indexes a reader reads (one GET each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Indexes {
    /// Every one: each point is offered (list, verify, persist).
    All,
    /// Only what the newest point at or before this time (the newest of all with `None`)
    /// needs: in each part, the first merged object observed after it, inside which the point
    /// may lie. Every other merged object is used whole, as one object at its key's time (its
    /// last point). Within a generation a later byte was never observed earlier, so this view
    /// chooses the same point, with the same size, as the whole one; it only knows fewer ways
    /// into merged objects. Recover and status plan on it first, with the same planner, and
    /// fall back to [`Indexes::All`] whenever it cannot vouch for the point: its memory then
    /// grows with the objects read, not with a month of points.
    Upto(Option<u64>),
}

/// Lists the prefix once, reading the indexes `need` says.
pub fn survey_for(store: &dyn ObjectStore, root: &str, need: Indexes) -> Result<Bucketed> {
    let mut read = settled(store, root, root, need)?;
    read.expand_lines();
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
        damaged: read.damaged,
        foreign: read.foreign,
    })
}

/// The view recovering (or judging) the newest point at or before `at` plans on: the cheap
/// [`Indexes::Upto`] one when it vouches for that point (one is chosen, its chain is whole, no
/// index it read is damaged), else the whole one. Either way the same planner decides.
pub fn survey_to_recover(store: &dyn ObjectStore, root: &str, at: Option<u64>) -> Result<Bucketed> {
    let cheap = survey_for(store, root, Indexes::Upto(at))?;
    let points = chain::recovery_points(&cheap.generations);
    let vouched = cheap.damaged.is_empty()
        && chain::choose(&points, at).is_ok_and(|p| {
            chain::check_points(&cheap.generations, vec![p])
                .1
                .is_empty()
        });
    if vouched {
        return Ok(cheap);
    }
    log::debug!("reading every index: the objects read whole do not vouch for the point");
    survey(store, root)
}

/// Moves every merged object whose index the view [`Indexes::Upto`] `at` does not need into
/// `read.objects`, whole (an encrypted one always needs it).
fn keep_whole(read: &mut Listing, at: Option<u64>) {
    let mut merged = std::mem::take(&mut read.merged);
    merged.sort_by(|(a, _), (b, _)| {
        (a.generation, a.mode, &a.part, a.start).cmp(&(b.generation, b.mode, &b.part, b.start))
    });
    let mut seen_after: BTreeSet<(u64, Mode, String)> = BTreeSet::new();
    for (k, size) in merged {
        let first_after = at.is_some_and(|t| k.time_ms > t)
            && seen_after.insert((k.generation, k.mode, k.part.clone()));
        // An encrypted object is opened age file by age file: where each ends is in its
        // index, so it is never read whole without it.
        match first_after || k.seal.encrypted() {
            true => read.merged.push((k, size)),
            false => read.objects.push(k),
        }
    }
}

pub fn warn_foreign(root: &str, foreign: &[(String, &'static str)]) {
    if let Some((key, why)) = foreign.first() {
        log::warn!(
            "ignoring {} object(s) under {root} that are not Petrify objects, first {key:?} ({why})",
            foreign.len()
        );
    }
}

/// A listing, sorted out.
pub struct Listing {
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
    /// Merged objects read through their index, by [`open_indexes`].
    pub lines: Vec<Line>,
    /// Merged objects gone by the time their index was read (replaced since the listing).
    pub gone: usize,
}

impl Listing {
    /// Every point of every line as an object of its own, into `objects`: what persist,
    /// recover and prune plan on (their views hold few points).
    pub fn expand_lines(&mut self) {
        for l in std::mem::take(&mut self.lines) {
            self.objects.extend(l.pieces());
        }
    }
}

/// Sorts a listing into our keys, marks of generations being deleted, and the rest.
pub fn read_listing(root: &str, listed: Vec<crate::s3::Listed>) -> Listing {
    let mut read = Listing {
        objects: Vec::new(),
        foreign: Vec::new(),
        dropping: BTreeSet::new(),
        merged: Vec::new(),
        damaged: Vec::new(),
        lines: Vec::new(),
        gone: 0,
    };
    for l in listed {
        let rel = l.key.strip_prefix(root).unwrap_or(&l.key);
        if rel == crate::lease::LEASE_NAME || rel.starts_with(crate::lease::LISTED_MARKER) {
            continue;
        }
        if let Some(g) = layout::parse_dropping(rel) {
            read.dropping.insert(g);
            continue;
        }
        match layout::parse(rel) {
            Ok(k) if k.kind == Kind::Merged && l.size > k.stored.1 => read.merged.push((k, l.size)),
            Ok(k) if k.kind != Kind::Merged && k.stored.1 == l.size => read.objects.push(k),
            Ok(_) => read
                .foreign
                .push((l.key, "its size does not match its key")),
            Err(e) => read.foreign.push((l.key, e.0)),
        }
    }
    read
}

/// Reads the index at the end of every merged object (at most [`INDEX_READERS`] at once) into
/// `read.lines`. An index that cannot be read or does not agree
/// with its key is named, with a WARN, in `read.damaged`, and the object goes into
/// `read.objects` whole (its last point only): the points inside it are not offered, never
/// offered wrongly. A merged object gone since the listing (compaction replaced it) is left
/// out and counted in `read.gone` (the listing is stale: see [`settled`]).
///
/// An index the store does not hand over (the network, a refusal, short answers, after
/// retries) fails the whole reading: it says nothing about the bucket, and a reader that went
/// on without it would judge points from less than the bucket holds.
pub fn open_indexes(store: &dyn ObjectStore, root: &str, read: &mut Listing) -> Result<()> {
    // A generation being deleted shows no point: its merged objects are only keys to delete.
    let (merged, dropping): (Vec<_>, Vec<_>) = std::mem::take(&mut read.merged)
        .into_iter()
        .partition(|(k, _)| !read.dropping.contains(&(k.generation, k.mode)));
    read.objects.extend(dropping.into_iter().map(|(k, _)| k));
    if merged.is_empty() {
        return Ok(());
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    type Opened = (usize, std::result::Result<Line, Unopened>);
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
            Ok(line) => read.lines.push(line),
            Err(Unopened::Gone) => read.gone += 1,
            Err(Unopened::Store(e)) => {
                return Err(Error::s3(
                    &format!("reading the index of merged object {k}"),
                    &e,
                ));
            }
            // Its key still vouches for all of its bytes, read whole against the key's CRC-32:
            // one object at its key's time (its last point), so that later points stay whole.
            // The points inside it cannot be located: not offered, and said. Encrypted, it
            // cannot even be read whole: where each age file ends is in the index.
            Err(Unopened::Damaged(why)) if k.seal.encrypted() => {
                log::warn!("merged object {k}: {why}; none of the points inside it is offered");
                read.damaged.push((k.clone(), why));
            }
            Err(Unopened::Damaged(why)) => {
                log::warn!(
                    "merged object {k}: {why}; the points inside it are not offered (its last \
                     point, read whole, is)"
                );
                read.objects.push(k.clone());
                read.damaged.push((k.clone(), why));
            }
        }
    }
    Ok(())
}

/// Why a merged object's points could not be read.
enum Unopened {
    /// Gone since the listing (compaction replaced it): simply left out.
    Gone,
    /// The index is there but does not hold (damage in the bucket).
    Damaged(String),
    /// The store did not hand it over.
    Store(S3Error),
}

/// The points of merged object `k`, from its index, in one GET (no retries: for the few
/// objects a merge or `verify --deep` opens). `Err`: the store's failure, or what is wrong with
/// the index.
pub fn index_of(
    store: &dyn ObjectStore,
    root: &str,
    k: &ObjectKey,
) -> std::result::Result<Line, std::result::Result<String, S3Error>> {
    use std::io::BufRead as _;
    let body = store.get_from(&k.key(root), k.stored.1).map_err(Err)?;
    let mut parser = layout::index::Parser::new(k, body.len.unwrap_or(0));
    let mut text = std::io::BufReader::new(body.reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match text.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => parser
                .feed(&line)
                .map_err(|why| Ok(format!("the index of {k}: {why}")))?,
            Err(e) => {
                return Err(Err(S3Error::Network(format!(
                    "reading the index of {k}: {e}"
                ))));
            }
        }
    }
    parser
        .finish()
        .map_err(|why| Ok(format!("the index of {k}: {why}")))
}

/// Indexes read at once: each is one small ranged GET that waits on latency.
const INDEX_READERS: usize = 16;

/// The points of one merged object, from its index (`size`: the object's length in the
/// listing), parsed as it streams in. A short answer is the store's fault, retried like a cut
/// download, even when what arrived already failed to parse.
fn read_index(
    store: &dyn ObjectStore,
    root: &str,
    k: &ObjectKey,
    size: u64,
) -> std::result::Result<Line, Unopened> {
    use std::io::{BufRead as _, Read as _};
    let key = k.key(root);
    let want = size - k.stored.1;
    let attempt = || -> std::result::Result<std::result::Result<Line, String>, S3Error> {
        let body = store.get_range(&key, k.stored.1, size)?;
        let mut text = std::io::BufReader::with_capacity(64 * 1024, body.reader.take(want));
        let mut parser = Some(layout::index::Parser::new(k, want));
        let mut damage = None;
        let (mut got, mut line) = (0u64, Vec::new());
        loop {
            line.clear();
            let n = text
                .read_until(b'\n', &mut line)
                .map_err(|e| S3Error::Network(format!("reading the index of {k}: {e}")))?;
            if n == 0 {
                break;
            }
            got += n as u64;
            // Once damaged, the rest is only counted: a short answer is retried, not damage.
            if let Some(p) = parser.as_mut()
                && let Err(why) = p.feed(&line)
            {
                damage = Some(why);
                parser = None;
            }
        }
        if got != want {
            return Err(S3Error::Network(format!(
                "the store answered with {got} of the {want} bytes of the index of {k}"
            )));
        }
        Ok(match (damage, parser) {
            (Some(why), _) => Err(why),
            (None, Some(p)) => p.finish(),
            (None, None) => Err("the index could not be read".into()),
        })
    };
    match crate::s3::retry(4, attempt) {
        Ok(Ok(line)) => Ok(line),
        Ok(Err(why)) => Err(Unopened::Damaged(why)),
        Err(S3Error::Status { status: 404, .. }) => Err(Unopened::Gone),
        Err(e) => Err(Unopened::Store(e)),
    }
}
