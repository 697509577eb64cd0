//! The planner's property: over random buckets in the in-memory store (chains, split points
//! cut short, retried uploads, merged objects whose inputs were or were not deleted, merged
//! objects nobody acknowledged, objects lost by hand), every point `list` shows rebuilds to the
//! exact bytes the file held at its time, and every point some path of objects can rebuild is
//! listed. The second half is checked against a brute-force search written independently of
//! the planner; and the cheaper view recover and status plan on chooses every point as the
//! whole view does, and rebuilds it. PETRIFY_PROP_CASES sets the number of buckets (default
//! 4000).

use std::collections::{BTreeMap, BTreeSet};

use crate::layout::index::{self, Entry};
use crate::layout::{FILE_PART, Kind, ObjectKey};
use crate::s3::ObjectStore;
use crate::s3::mem::MemStore;

const ROOT: &str = "p/petrify-v1/";

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// An object of kind `kind` holding `bytes[start..end]`, observed at `time_ms`.
fn key(kind: Kind, start: u64, end: u64, time_ms: u64, bytes: &[u8]) -> ObjectKey {
    ObjectKey {
        crc: crc32fast::hash(&bytes[start as usize..end as usize]),
        kind,
        ..crate::chain::tests::delta(1, start, end, time_ms)
    }
}

/// A history and a bucket of one generation made of it, as persist and the world could leave
/// it. Returns the file's bytes, its length at each observation, and the objects uploaded
/// (with their bytes) before any merge.
struct Bucket {
    file: Vec<u8>,
    /// Time -> the file's length then, for every observation.
    lens: BTreeMap<u64, u64>,
    store: MemStore,
}

fn random_bucket(r: &mut Rng) -> Bucket {
    let mut file = Vec::new();
    let mut lens = BTreeMap::new();
    // What a chain of uploads left: (key, closing) in upload order.
    let mut uploaded: Vec<ObjectKey> = Vec::new();
    let mut sent = 0u64; // where the next upload starts
    let mut t = 1_000u64;
    for _ in 0..1 + r.below(14) {
        t += 1 + r.below(5);
        for _ in 0..r.below(6) {
            file.push(b'a' + r.below(26) as u8);
        }
        let len = file.len() as u64;
        lens.insert(t, len);
        if len == sent && sent > 0 {
            continue; // nothing new: no upload, and no point
        }
        // The range [sent, len) in 1..3 objects; the last closes the point unless the upload
        // was cut short (persist died, the store refused the rest).
        let n = 1 + r.below(3);
        let cut: Vec<u64> = {
            let mut c: Vec<u64> = (1..n).map(|_| sent + r.below(len - sent + 1)).collect();
            c.sort_unstable();
            c.push(len);
            c
        };
        let cut_short = n > 1 && r.one_in(5);
        let mut from = sent;
        for (i, &to) in cut.iter().enumerate() {
            let last = i + 1 == cut.len();
            if cut_short && last {
                break;
            }
            let kind = if last { Kind::Delta } else { Kind::Piece };
            uploaded.push(key(kind, from, to, t, &file));
            from = to;
        }
        // An answer lost for a stored delta: the next upload starts again from the same offset
        // with more bytes (a longer retry beside the shorter one).
        if !cut_short && r.one_in(6) {
            continue;
        }
        sent = from;
    }
    let store = MemStore::new();
    let put = |k: &ObjectKey, body: &[u8]| {
        store
            .put(&k.key(ROOT), &mut &body[..], body.len() as u64, None)
            .unwrap();
    };
    // Merges of runs of the chain as persist makes them (pieces folded into the point that
    // closes them), some acknowledged (inputs deleted), some not (inputs stay), some stray.
    let mut deleted: BTreeSet<usize> = BTreeSet::new();
    let mut merged: Vec<(ObjectKey, Vec<u8>)> = Vec::new();
    for _ in 0..r.below(3) {
        if uploaded.is_empty() {
            break;
        }
        let a = r.below(uploaded.len() as u64) as usize;
        let b = a + 1 + r.below((uploaded.len() - a) as u64) as usize;
        let run = &uploaded[a..b];
        // A merge covers a contiguous run that ends with a closing object.
        if run.windows(2).any(|w| w[0].end != w[1].start) || !run[run.len() - 1].kind.closes() {
            continue;
        }
        let mut entries: Vec<Entry> = Vec::new();
        let mut carried_from = run[0].start;
        // As persist merges: a piece whose look closed keeps its own line (its time is a
        // point); one of a look cut short goes into the next line.
        let closed = |o: &ObjectKey| {
            o.kind.closes()
                || uploaded
                    .iter()
                    .any(|c| c.time_ms == o.time_ms && c.kind.closes())
        };
        for o in run {
            if closed(o) {
                let bytes = &file[carried_from as usize..o.end as usize];
                entries.push(Entry {
                    end: o.end,
                    time_ms: o.time_ms,
                    crc: crc32fast::hash(bytes),
                    stored: o.end - carried_from,
                });
                carried_from = o.end;
            }
        }
        let last = &run[run.len() - 1];
        let m = key(Kind::Merged, run[0].start, last.end, last.time_ms, &file);
        if m.start == m.end {
            continue;
        }
        let mut body = file[m.start as usize..m.end as usize].to_vec();
        body.extend_from_slice(&index::render(&entries, false));
        if r.one_in(2) {
            deleted.extend(a..b);
        }
        merged.push((m, body));
    }
    for (i, o) in uploaded.iter().enumerate() {
        // Lost by hand or a lifecycle rule, now and then.
        if !deleted.contains(&i) && !r.one_in(12) {
            put(o, &file[o.start as usize..o.end as usize]);
        }
    }
    for (m, body) in &merged {
        if !r.one_in(12) {
            put(m, body);
        }
    }
    Bucket { file, lens, store }
}

/// Whether some path of objects observed by `t` leads from byte 0 to byte `len`: a plain
/// depth-first search over every edge (each object, each point of a merged object).
fn rebuildable(objects: &[ObjectKey], t: u64, len: u64) -> bool {
    let edges: Vec<(u64, u64)> = objects
        .iter()
        .filter(|o| o.time_ms <= t)
        .map(|o| (o.start, o.end))
        .collect();
    let mut seen = BTreeSet::from([0u64]);
    let mut todo = vec![0u64];
    while let Some(x) = todo.pop() {
        for &(s, e) in &edges {
            if s == x && seen.insert(e) {
                todo.push(e);
            }
        }
    }
    seen.contains(&len)
}

fn cases() -> usize {
    std::env::var("PETRIFY_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000)
}

#[test]
fn listed_points_rebuild_exactly_and_every_rebuildable_point_is_listed() {
    let mut r = Rng(0x5eed_0fc4_a100_0001);
    let started = std::time::Instant::now();
    let (mut listed_total, mut buckets) = (0usize, 0usize);
    for case in 0..cases() {
        let b = random_bucket(&mut r);
        let found = crate::bucket::survey(&b.store, ROOT).unwrap();
        let points = crate::chain::recovery_points(&found.generations);
        let (good, broken) = crate::chain::check_points(&found.generations, points.clone());
        // What list and verify walk (merged objects as lines, never a point each) says the
        // same of every point, in the same words.
        let stored = crate::bucket::survey_stored(&b.store, ROOT, ROOT).unwrap();
        let mut walked = Vec::new();
        for g in &stored.generations {
            crate::chain::walk(g.id, &g.view(), |p, why| walked.push((p, why.cloned())));
        }
        let expected: Vec<_> = good
            .iter()
            .map(|p| (*p, None))
            .chain(broken.iter().map(|b| (b.point, Some(b.why.clone()))))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        walked.sort();
        assert_eq!(walked, expected, "case {case}: the stored walk disagrees");
        let objects = b.store.objects();
        let no_part = Vec::new();
        let objs = found
            .generations
            .first()
            .and_then(|g| g.parts.get(FILE_PART))
            .unwrap_or(&no_part);
        for p in &good {
            let want = b.lens[&p.time_ms];
            assert_eq!(
                p.bytes, want,
                "case {case}: point {p:?} claims another length"
            );
            let plan = crate::chain::plan_part(objs, p.time_ms)
                .unwrap_or_else(|e| panic!("case {case}: listed {p:?} does not plan: {e}"));
            let mut bytes = Vec::new();
            for read in crate::chain::downloads(&plan) {
                let (a, z) = read.in_object(read.start, read.end);
                let body = &objects[&read.object.key(ROOT)][a as usize..z as usize];
                assert_eq!(crc32fast::hash(body), read.crc, "case {case}: a read's CRC");
                bytes.extend_from_slice(body);
            }
            assert_eq!(bytes, &b.file[..want as usize], "case {case}: {p:?}");
            // The view recover and status plan on chooses the same point, of the same size,
            // and rebuilds it too.
            for at in [Some(p.time_ms), None] {
                let view = crate::bucket::survey_to_recover(&b.store, ROOT, at).unwrap();
                let pts = crate::chain::recovery_points(&view.generations);
                let mine = crate::chain::choose(&pts, at).unwrap();
                let theirs = crate::chain::choose(&points, at).unwrap();
                assert_eq!(mine, theirs, "case {case}: at {at:?}");
                let (_, broken) = crate::chain::check_points(&view.generations, vec![mine]);
                let listed = good.contains(&theirs);
                assert_eq!(broken.is_empty(), listed, "case {case}: {mine:?}");
                if listed {
                    let objs = &view.generations[0].parts[FILE_PART];
                    let plan = crate::chain::plan_part(objs, mine.time_ms).unwrap();
                    let mut got = Vec::new();
                    for read in crate::chain::downloads(&plan) {
                        let (a, z) = read.in_object(read.start, read.end);
                        got.extend_from_slice(
                            &objects[&read.object.key(ROOT)][a as usize..z as usize],
                        );
                    }
                    assert_eq!(got, &b.file[..mine.bytes as usize], "case {case}");
                }
            }
        }
        for x in &broken {
            assert!(
                crate::chain::plan_part(objs, x.point.time_ms).is_err(),
                "case {case}: {x:?} plans, yet check_points calls it broken"
            );
            assert!(
                !rebuildable(objs, x.point.time_ms, x.point.bytes),
                "case {case}: {x:?} can be rebuilt but is not listed"
            );
        }
        // Every observation whose closing object (or merged point) is in the bucket is a
        // point; pieces alone make none.
        let closed: BTreeSet<u64> = objs
            .iter()
            .filter(|o| o.kind.closes())
            .map(|o| o.time_ms)
            .collect();
        let offered: BTreeSet<u64> = points.iter().map(|p| p.time_ms).collect();
        assert_eq!(offered, closed, "case {case}");
        listed_total += good.len();
        buckets += 1;
    }
    eprintln!(
        "planner property: {buckets} random buckets, {listed_total} listed points rebuilt, in \
         {:.2} s",
        started.elapsed().as_secs_f64()
    );
}
