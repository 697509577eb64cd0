//! Retention: which generations no recovery point worth keeping needs, and deleting them. Kept:
//! every point newer than the cutoff (now minus `--retain`), and the newest point before it, so
//! that any time after the cutoff still has a point at or before it. Within a generation the
//! file at any point is a prefix of the file at the next, so a kept point stands on every delta
//! of its generation before it: what goes is whole generations none of whose points is kept
//! (never the newest generation, which persist continues).
//!
//! Deciding is pure ([`plan`]); `petrify prune` and `persist --retain` apply it. A generation is
//! first marked as being deleted (`<generation>/dropping`, see [`crate::layout::DROPPING`]), then
//! its objects go in batches, the mark last. Readers pass over a marked generation, so a prune
//! cut short (SIGKILL, a lost connection) shows no half-deleted history, and every kept point
//! stays recoverable; the next prune finishes what the mark names.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::time::Duration;

use crate::bucket::{self, Place};
use crate::chain::{self, GenId, Generation, RecoveryPoint};
use crate::error::{Error, Exit, Result};
use crate::layout::{self, ObjectKey};
use crate::lease::{self, Lease};
use crate::s3::{MAX_BATCH, ObjectStore};
use crate::timestamp::{self, rfc3339_ms};

/// What applying a retention would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunePlan {
    /// The oldest point kept, if there is any point.
    pub oldest_kept: Option<RecoveryPoint>,
    pub kept_points: usize,
    pub dropped_points: usize,
    /// The generations to delete, oldest first: those no kept point needs, and those a prune
    /// cut short had marked.
    pub drop: Vec<Generation>,
    pub objects: usize,
    pub bytes: u64,
    /// Objects of the generations kept that merged objects replaced (a persist whose key may
    /// not delete leaves them): no point needs them.
    pub replaced: Vec<ObjectKey>,
}

/// The plan for keeping what `cutoff_ms` and later need. Points are taken in list order
/// (generation, then time): the newest point before the cutoff in that order and every point
/// after it are kept, and so is any point labelled after the cutoff (a clock that was ahead).
/// A generation goes when none of its points is kept, all its objects are older than the
/// cutoff, and it is not the newest. `dropping`: generations already marked, which go too.
pub fn plan(gens: &[Generation], dropping: &[Generation], cutoff_ms: u64) -> PrunePlan {
    let points = chain::recovery_points(gens);
    let anchor = points.iter().rposition(|p| p.time_ms < cutoff_ms);
    let kept: Vec<&RecoveryPoint> = points
        .iter()
        .enumerate()
        .filter(|(i, p)| p.time_ms >= cutoff_ms || anchor.is_some_and(|a| *i >= a))
        .map(|(_, p)| p)
        .collect();
    let needed: BTreeSet<GenId> = kept.iter().map(|p| p.generation).collect();
    let newest = gens.iter().map(|g| g.id).max();
    let mut drop: Vec<Generation> = gens
        .iter()
        .filter(|g| !needed.contains(&g.id) && Some(g.id) != newest && g.last_time() < cutoff_ms)
        .chain(dropping)
        .cloned()
        .collect();
    drop.sort_by_key(|g| g.id);
    let gone: BTreeSet<GenId> = drop.iter().map(|g| g.id).collect();
    let replaced = gens
        .iter()
        .filter(|g| !gone.contains(&g.id))
        .flat_map(|g| g.hidden.iter().cloned())
        .collect();
    PrunePlan {
        replaced,
        oldest_kept: kept.first().map(|p| **p),
        kept_points: kept.len(),
        dropped_points: points
            .iter()
            .filter(|p| gone.contains(&p.generation))
            .count(),
        objects: drop.iter().map(|g| g.stored().len()).sum(),
        bytes: drop
            .iter()
            .flat_map(Generation::stored)
            // What deleting frees: the bytes stored (sealed ones are fewer than they hold).
            .map(|o| o.stored.1)
            .sum(),
        drop,
    }
}

/// `petrify prune`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneRequest {
    pub place: Place,
    pub retain: Duration,
    pub dry_run: bool,
}

/// `petrify prune`: takes the prefix's writer lease (a running persist holds it: pruning is then
/// that persist's job, with `--retain`), applies the retention, gives the lease back. With
/// `dry_run`, touches nothing and prints each object that would go.
pub fn prune(req: &PruneRequest, store: &dyn ObjectStore, out: &mut dyn Write) -> Result<()> {
    let root = req.place.root();
    let where_ = req.place.describe();
    let cutoff = timestamp::now_ms().saturating_sub(req.retain.as_millis() as u64);
    if req.dry_run {
        let found = bucket::survey(store, &root)?;
        let p = plan(&found.generations, &found.dropping, cutoff);
        let write = |out: &mut dyn Write| -> io::Result<()> {
            for o in p
                .drop
                .iter()
                .flat_map(Generation::stored)
                .chain(&p.replaced)
            {
                writeln!(out, "{root}{o}  {}", o.stored.1)?;
            }
            out.flush()
        };
        if let Err(e) = write(out)
            && e.kind() != io::ErrorKind::BrokenPipe
        {
            return Err(Error::new(Exit::Io, format!("cannot write the list: {e}")));
        }
        log::info!("dry run: {}", describe(&p, &where_, false));
        return Ok(());
    }
    let me = Lease::mine(std::path::Path::new("(petrify prune)"));
    match lease::acquire(store, &root, &me, &where_) {
        Ok(()) => {}
        // A persist whose key may not delete leaves retention to a key that may: beside it,
        // prune deletes only what no point needs (never the newest generation, which that
        // persist writes, nor anything a listed point stands on).
        Err(e) if e.exit == Exit::CantCreate && lease::holder_cannot_delete(store, &root) => {
            log::info!("the persist writing {where_} may not delete: pruning beside it");
            return apply(store, &root, cutoff, &where_).map(drop);
        }
        Err(e) if e.exit == Exit::CantCreate => {
            return Err(Error::new(
                Exit::CantCreate,
                format!(
                    "{}; a running persist prunes its own prefix: give it --retain",
                    e.message
                ),
            ));
        }
        Err(e) => return Err(e),
    }
    let result = apply(store, &root, cutoff, &where_);
    lease::release(store, &root, &me);
    result.map(drop)
}

/// Lists the prefix, plans for `cutoff_ms` and deletes; the caller holds the writer lease.
/// Returns the plan carried out.
pub fn apply(
    store: &dyn ObjectStore,
    root: &str,
    cutoff_ms: u64,
    where_: &str,
) -> Result<PrunePlan> {
    let found = bucket::survey(store, root)?;
    let p = plan(&found.generations, &found.dropping, cutoff_ms);
    for g in &p.drop {
        let marked = found.dropping.iter().any(|d| d.id == g.id);
        // Merged objects whose index cannot be read hold no listed point, but must not
        // outlive the generation's mark either.
        let unreadable: Vec<&ObjectKey> = found
            .damaged
            .iter()
            .map(|(k, _)| k)
            .filter(|k| (k.generation, k.mode) == (g.id.number, g.id.mode))
            .collect();
        drop_generation(store, root, g, &unreadable, marked)?;
    }
    let replaced: Vec<String> = p.replaced.iter().map(|o| o.key(root)).collect();
    for batch in replaced.chunks(MAX_BATCH) {
        let refused = store
            .delete_many(batch)
            .map_err(|e| Error::s3("deleting objects merged objects replaced", &e))?;
        if let Some((key, code)) = refused.first() {
            return Err(Error::new(
                Exit::NoPerm,
                format!(
                    "the store refused to delete {} object(s) merged objects replaced, first \
                     {key} ({code}); every point is recoverable",
                    refused.len()
                ),
            ));
        }
    }
    match p.drop.is_empty() && p.replaced.is_empty() {
        true => log::debug!("retention: nothing to delete under {where_}"),
        false => log::info!("retention: {}", describe(&p, where_, true)),
    }
    Ok(p)
}

/// Marks `g` as being deleted, deletes its objects, then the mark.
fn drop_generation(
    store: &dyn ObjectStore,
    root: &str,
    g: &Generation,
    unreadable: &[&ObjectKey],
    already_marked: bool,
) -> Result<()> {
    let mark = format!("{root}{}", layout::dropping_key(g.id.number, g.id.mode));
    let what = format!("generation {}", g.id.number);
    crate::s3::retry(4, || {
        store.put(&mark, &mut &b""[..], 0, Some(crc32fast::hash(b"")))
    })
    .map_err(|e| Error::s3(&format!("marking {what} as being deleted"), &e))?;
    // With the objects a merged one replaced but a crash left behind: none may outlive the
    // generation, or its points would come back once the mark is gone.
    let keys: Vec<String> = g
        .stored()
        .into_iter()
        .chain(&g.hidden)
        .chain(unreadable.iter().copied())
        .map(|o| o.key(root))
        .collect();
    for (i, batch) in keys.chunks(MAX_BATCH).enumerate() {
        let refused = match store.delete_many(batch) {
            Ok(r) => r,
            Err(e) => {
                let e = Error::s3(&format!("deleting {what}"), &e);
                return Err(unmark_if_whole(store, &mark, i == 0 && !already_marked, e));
            }
        };
        if let Some((key, code)) = refused.first() {
            let e = Error::new(
                Exit::NoPerm,
                format!(
                    "the store refused to delete {} object(s) of {what}, first {key} ({code}); \
                     every kept point is recoverable",
                    refused.len()
                ),
            );
            let whole = i == 0 && !already_marked && refused.len() == batch.len();
            return Err(unmark_if_whole(store, &mark, whole, e));
        }
    }
    crate::s3::retry(4, || store.delete(&mark))
        .map_err(|e| Error::s3(&format!("removing the mark of {what}"), &e))?;
    log::debug!("deleted {what} ({} objects)", keys.len());
    Ok(())
}

/// After a failed deletion: if nothing of the generation was deleted (`whole`), its mark is
/// taken away again, so that its points, all still in the bucket, stay listed and recoverable
/// (a store that refuses deletions would otherwise hide history it keeps). A generation already
/// partly deleted keeps its mark, for the next prune to finish.
fn unmark_if_whole(store: &dyn ObjectStore, mark: &str, whole: bool, e: Error) -> Error {
    if !whole {
        return Error::new(
            e.exit,
            format!(
                "{}; it stays marked as being deleted, for the next prune to finish",
                e.message
            ),
        );
    }
    match crate::s3::retry(4, || store.delete(mark)) {
        Ok(()) => Error::new(e.exit, format!("{}; nothing of it was deleted", e.message)),
        Err(d) => Error::new(
            e.exit,
            format!("{}; and its mark could not be taken away ({d})", e.message),
        ),
    }
}

/// One line for the log: what went (`done`) or would go.
fn describe(p: &PrunePlan, where_: &str, done: bool) -> String {
    format!(
        "{} generation(s), {} object(s), {} bytes {} under {where_}, and {} object(s) merged \
         objects replaced; {} point(s) dropped, {} kept{}",
        p.drop.len(),
        p.objects,
        p.bytes,
        if done { "deleted" } else { "to delete" },
        p.replaced.len(),
        p.dropped_points,
        p.kept_points,
        p.oldest_kept
            .map(|k| format!(", the oldest {}", rfc3339_ms(k.time_ms)))
            .unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{FILE_PART, Kind, Mode};

    fn key(generation: u64, (start, end): (u64, u64), time_ms: u64) -> ObjectKey {
        ObjectKey {
            generation,
            mode: Mode::File,
            part: FILE_PART.into(),
            start,
            end,
            time_ms,
            crc: 0,
            kind: Kind::Delta,
            seal: crate::layout::Seal::Plain,
            stored: (0, end - start),
            within: None,
        }
    }

    fn dropped(p: &PrunePlan) -> Vec<u64> {
        p.drop.iter().map(|g| g.id.number).collect()
    }

    #[test]
    fn keeps_the_window_and_the_point_before_it_and_drops_whole_older_generations() {
        let gens = chain::generations(vec![
            key(1, (0, 10), 100),
            key(1, (10, 20), 200),
            key(2, (0, 5), 300),
            key(2, (5, 8), 400),
            key(3, (0, 4), 500),
            key(3, (4, 9), 600),
        ]);
        // Cutoff 450: kept 400 (the newest before) and on; generation 1 goes.
        let p = plan(&gens, &[], 450);
        assert_eq!(dropped(&p), [1]);
        assert_eq!((p.objects, p.bytes), (2, 20));
        assert_eq!((p.kept_points, p.dropped_points), (3, 2));
        assert_eq!(p.oldest_kept.map(|k| k.time_ms), Some(400));
        // A cutoff inside generation 2 keeps its point before: nothing of it goes.
        assert_eq!(dropped(&plan(&gens, &[], 350)), [1]);
        assert_eq!(dropped(&plan(&gens, &[], 250)), Vec::<u64>::new());
        // Nothing before the cutoff: nothing goes. Everything before it: all but the newest.
        assert!(plan(&gens, &[], 50).drop.is_empty());
        let p = plan(&gens, &[], 10_000);
        assert_eq!(dropped(&p), [1, 2]);
        assert_eq!(p.kept_points, 1);
    }

    #[test]
    fn the_newest_generation_and_marked_ones() {
        // A newest generation with no point yet (a Redis folder before its first manifest) is
        // never dropped; a marked one always is.
        let mut objs = vec![key(1, (0, 10), 100)];
        let mut folder = key(2, (0, 3), 150);
        folder.mode = Mode::AofDir;
        folder.part = "appendonly.aof.1.base.rdb".into();
        objs.push(folder);
        let gens = chain::generations(objs);
        assert!(plan(&gens, &[], 10_000).drop.is_empty());
        let marked = chain::generations(vec![key(7, (0, 1), 10)]);
        assert_eq!(dropped(&plan(&gens, &marked, 10_000)), [7]);
    }

    /// A store that refuses the deletion: the error says so, the mark is taken away again,
    /// and the generation (all of it still there) stays listed; once deletions are allowed,
    /// it goes.
    #[test]
    fn a_refused_deletion_hides_nothing() {
        use crate::s3::mem::MemStore;
        use std::sync::atomic::Ordering;
        let store = MemStore::new();
        let root = "p/petrify-v1/";
        for (g, t) in [(1, 100), (2, 200)] {
            let k = key(g, (0, 1), t);
            store.put(&k.key(root), &mut &b"x"[..], 1, None).unwrap();
        }
        store.refuse_deletes.store(true, Ordering::SeqCst);
        let e = apply(&store, root, 10_000, "s3://b/p/").unwrap_err();
        assert_eq!(e.exit, Exit::NoPerm);
        assert!(
            e.message.contains("nothing of it was deleted"),
            "{}",
            e.message
        );
        let found = bucket::survey(&store, root).unwrap();
        assert!(found.dropping.is_empty());
        assert_eq!(found.generations.len(), 2);
        assert_eq!(chain::recovery_points(&found.generations).len(), 2);

        store.refuse_deletes.store(false, Ordering::SeqCst);
        let p = apply(&store, root, 10_000, "s3://b/p/").unwrap();
        assert_eq!(dropped(&p), [1]);
        let found = bucket::survey(&store, root).unwrap();
        assert_eq!(found.generations.len(), 1);
        assert!(store.objects().keys().all(|k| !k.ends_with("/dropping")));
    }
}
