//! Compaction driven point by point (times given, not read from the clock) against the
//! in-memory store: every point stays, with its time and bytes; the objects a point needs stay
//! few; large inputs are copied, never a short part but the last; a file that changed under
//! persist is never merged from.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;

use super::{ROOT, Scratch, generations, rebuild, session};
use crate::chain::{self, GenId};
use crate::compaction::Spans;
use crate::layout::{Kind, Mode};
use crate::s3::mem::MemStore;
use crate::tail::shipped::{FileId, Shipped};

const GEN: GenId = GenId {
    number: 1,
    mode: Mode::File,
};

/// A file holding `content` in a scratch folder (kept while the guard lives), and the progress
/// of following it.
fn followed(content: &[u8]) -> (Scratch, std::path::PathBuf, Shipped) {
    let dir = Scratch::new();
    let path = dir.0.join("log");
    fs::write(&path, content).unwrap();
    let file = fs::File::open(&path).unwrap();
    let id = FileId::of(&file.metadata().unwrap());
    (dir, path, Shipped::new(file, id))
}

/// Appends `chunk(i)` and ships it at `time(i)` for each `i`, returning the file's length
/// at each time.
fn run(
    store: &MemStore,
    spans: &str,
    n: u64,
    time: impl Fn(u64) -> u64,
    chunk: impl Fn(u64) -> Vec<u8>,
) -> (Scratch, BTreeMap<u64, u64>, usize) {
    run_sealed(store, spans, (n, time), chunk, Default::default())
}

/// [`run`], sealing as `sealer` says.
fn run_sealed(
    store: &MemStore,
    spans: &str,
    (n, time): (u64, impl Fn(u64) -> u64),
    chunk: impl Fn(u64) -> Vec<u8>,
    sealer: crate::seal::Sealer,
) -> (Scratch, BTreeMap<u64, u64>, usize) {
    let (dir, path, mut shipped) = followed(b"");
    let mut ses = session(store);
    ses.up.sealer = sealer;
    ses.compaction = Spans::parse(spans).unwrap();
    let mut out = fs::OpenOptions::new().append(true).open(&path).unwrap();
    let mut lens = BTreeMap::new();
    let mut most_held = 0;
    for i in 0..n {
        out.write_all(&chunk(i)).unwrap();
        let len = fs::metadata(&path).unwrap().len();
        shipped
            .ship(&mut ses, GEN, "file", len, (time(i), true))
            .unwrap();
        lens.insert(time(i), len);
        most_held = most_held.max(shipped.held_count());
        ses.doomed.flush(store, i % 97 == 0);
    }
    ses.doomed.flush(store, true);
    (dir, lens, most_held)
}

/// Every point listed is one shipped, with its length, and `sample` of them rebuild to the
/// file's prefix; returns the largest number of objects one point needed.
fn check_points(store: &MemStore, dir: &Scratch, lens: &BTreeMap<u64, u64>, every: usize) -> usize {
    let gens = generations(store);
    let points = chain::recovery_points(&gens);
    let listed: BTreeMap<u64, u64> = points.iter().map(|p| (p.time_ms, p.bytes)).collect();
    assert_eq!(&listed, lens, "the points are exactly those shipped");
    let data = fs::read(dir.0.join("log")).unwrap();
    let objects = store.objects();
    let objs = &gens[0].parts["file"];
    let mut most = 0;
    for (k, p) in points.iter().enumerate() {
        if k % every != 0 && k + 1 != points.len() {
            continue;
        }
        let plan = chain::plan_part(objs, p.time_ms).unwrap();
        most = most.max(chain::downloads(&plan).len());
        assert_eq!(
            rebuild(&objects, &plan),
            &data[..p.bytes as usize],
            "point {}",
            p.time_ms
        );
    }
    most
}

#[test]
fn thousands_of_points_keep_their_times_and_bytes() {
    let store = MemStore::new();
    // One point every 250 ms for 20 minutes, spans 1s..10m.
    let (dir, lens, held) = run(
        &store,
        "1s,5s,30s,2m,10m",
        4800,
        |i| 1_764_000_000_000 + 250 * (i + 1),
        |i| format!("SET key{i} {}\n", "v".repeat((i % 13) as usize)).into_bytes(),
    );
    let most = check_points(&store, &dir, &lens, 20);
    assert!(held <= 25, "{held} objects held");
    assert!(most <= 25, "a point needed {most} objects");
    let stored = store.objects().len();
    assert!(
        stored < 40,
        "{stored} objects in the bucket for 4800 points"
    );
    // Nothing merged is left behind once the deletions went out.
    assert!(generations(&store)[0].hidden.is_empty());
}

#[test]
fn sealed_merges_keep_every_point_each_its_own_unit() {
    for (level, encrypt) in [(Some(3), false), (None, true), (Some(1), true)] {
        let store = MemStore::new();
        let sealer = crate::seal::Sealer {
            level,
            recipients: match encrypt {
                true => vec![super::test_key().to_public()],
                false => vec![],
            },
        };
        let seal = sealer.seal();
        let (dir, lens, _) = run_sealed(
            &store,
            "1s,5s,30s",
            (300, |i| 1_764_000_000_000 + 250 * (i + 1)),
            |i| format!("SET key{i} {}\n", "v".repeat((i % 13) as usize)).into_bytes(),
            sealer,
        );
        // Every point, from the deltas and from inside merged objects, opens to its bytes.
        check_points(&store, &dir, &lens, 7);
        let gens = generations(&store);
        let objs = &gens[0].parts["file"];
        assert!(objs.iter().any(|o| o.within.is_some()), "nothing merged");
        assert!(objs.iter().all(|o| o.seal == seal), "{seal:?}");
    }
}

#[test]
fn a_large_sealed_range_goes_up_in_sealed_pieces_closing_one_point() {
    let store = MemStore::new();
    let content: Vec<u8> = (0..90_000u32)
        .flat_map(|i| format!("SET key:{i} {}\n", i % 7).into_bytes())
        .collect();
    let (dir, _, mut shipped) = followed(&content);
    let mut ses = session(&store);
    ses.up.sealer = crate::seal::Sealer {
        level: Some(1),
        recipients: vec![super::test_key().to_public()],
    };
    let len = content.len() as u64;
    shipped
        .ship(&mut ses, GEN, "file", len, (1_000, true))
        .unwrap();
    let gens = generations(&store);
    let objs = &gens[0].parts["file"];
    // 1 MiB objects in this session: pieces, then the delta that closes the one point.
    assert!(objs.len() > 1, "{objs:?}");
    assert!(objs.iter().all(|o| o.seal == crate::layout::Seal::ZstdAge));
    assert_eq!(objs.iter().filter(|o| o.kind.closes()).count(), 1);
    let lens = BTreeMap::from([(1_000, len)]);
    check_points(&store, &dir, &lens, 1);
}

#[test]
fn large_indexes_are_streamed_and_checked() {
    let store = MemStore::new();
    // 40,000 points a millisecond apart: merged objects of 10,000 points, then of 30,000,
    // whose indexes are read back from the bucket rather than kept.
    let (dir, lens, _) = run(
        &store,
        "1s,10s,30s",
        40_000,
        |i| 1_764_000_000_000 + i,
        |i| vec![b'a' + (i % 26) as u8; 3],
    );
    check_points(&store, &dir, &lens, 997);
    let gens = generations(&store);
    let biggest = gens[0]
        .stored()
        .iter()
        .map(|o| (o.kind == Kind::Merged) as u64 * o.len())
        .max()
        .unwrap();
    assert!(biggest >= 30_000 * 3, "{biggest}");
}

#[test]
fn large_inputs_are_copied_in_the_store() {
    let store = MemStore::new();
    const M: usize = 1 << 20;
    // Three 6 MiB deltas, then a small one in the next window: three copies, one last part.
    let (dir, lens, _) = run(
        &store,
        "10s",
        4,
        |i| [1_000, 2_000, 3_000, 10_000][i as usize],
        |i| vec![i as u8; if i < 3 { 6 * M } else { 100 }],
    );
    check_points(&store, &dir, &lens, 1);
    let stored = generations(&store)[0].stored().len();
    assert_eq!(stored, 1, "one merged object");
    // MemStore refuses a short part before the last, like AWS: the merge got through.
    let requests = store.requests.load(std::sync::atomic::Ordering::SeqCst);
    assert!(requests >= 4, "{requests}");
}

#[test]
fn a_file_changed_under_persist_is_not_merged_from() {
    let store = MemStore::new();
    let (_dir, path, mut shipped) = followed(b"hello ");
    let mut ses = session(&store);
    ses.compaction = Spans::parse("1s").unwrap();
    shipped.ship(&mut ses, GEN, "file", 6, (100, true)).unwrap();
    // Written in place (not appended): the bucket's bytes are no longer the file's.
    fs::write(&path, b"HELLO world").unwrap();
    shipped
        .ship(&mut ses, GEN, "file", 11, (1_500, true))
        .unwrap();
    let gens = generations(&store);
    assert!(
        gens[0].stored().iter().all(|o| o.kind == Kind::Delta),
        "nothing merged from changed bytes"
    );
    assert_eq!(
        store.objects().values().next().map(|v| v.as_slice()),
        Some(&b"hello "[..]),
        "the first object is as uploaded"
    );
}

#[test]
fn recovering_reads_only_the_index_it_needs() {
    let store = MemStore::new();
    let (dir, lens, _) = run(
        &store,
        "1s,5s,30s",
        600,
        |i| 1_764_000_000_000 + 100 * (i + 1),
        |i| format!("{i}\n").into_bytes(),
    );
    let data = fs::read(dir.0.join("log")).unwrap();
    let objects = store.objects();
    for (k, (&t, &len)) in lens.iter().enumerate() {
        if k % 37 != 0 && k + 1 != lens.len() {
            continue;
        }
        for at in [Some(t), None] {
            let before = store.requests.load(std::sync::atomic::Ordering::SeqCst);
            let found = crate::bucket::survey_to_recover(&store, ROOT, at).unwrap();
            let reads = store.requests.load(std::sync::atomic::Ordering::SeqCst) - before;
            // The listing, and at most one index.
            assert!(reads <= 2, "{reads} requests to plan");
            let points = chain::recovery_points(&found.generations);
            let p = chain::choose(&points, at).unwrap();
            let want = match at {
                Some(_) => (t, len),
                None => (*lens.keys().last().unwrap(), data.len() as u64),
            };
            assert_eq!((p.time_ms, p.bytes), want);
            let plan = chain::plan_part(&found.generations[0].parts["file"], p.time_ms).unwrap();
            assert_eq!(rebuild(&objects, &plan), &data[..p.bytes as usize]);
        }
    }
}

/// A piece whose point closed elsewhere (a Redis look closed by its manifest) keeps its own
/// line when merged, so that point keeps its bytes; a piece of a look cut short is folded into
/// the next point, so it never becomes one.
#[test]
fn merging_keeps_closed_pieces_as_points_and_folds_open_ones() {
    for closed in [true, false] {
        let store = MemStore::new();
        let (_dir, path, mut shipped) = followed(b"first ");
        let mut ses = session(&store);
        ses.compaction = Spans::parse("1s").unwrap();
        shipped
            .ship(&mut ses, GEN, "file", 6, (100, false))
            .unwrap();
        if closed {
            shipped.close_point(100);
        }
        let mut out = fs::OpenOptions::new().append(true).open(&path).unwrap();
        out.write_all(b"second").unwrap();
        shipped
            .ship(&mut ses, GEN, "file", 12, (1_500, true))
            .unwrap();
        let gens = generations(&store);
        assert!(
            gens[0].stored().iter().any(|o| o.kind == Kind::Merged),
            "merged: {:?}",
            store.objects().keys()
        );
        let points: Vec<(u64, u64)> = chain::recovery_points(&gens)
            .iter()
            .map(|p| (p.time_ms, p.bytes))
            .collect();
        match closed {
            true => assert_eq!(points, [(100, 6), (1_500, 12)]),
            false => assert_eq!(points, [(1_500, 12)]),
        }
        // Not deleted yet: a closed piece is a line of the merged object, so readers pass over
        // it and a resumed persist deletes it. An open one was folded into the next line: it
        // stays an object of its own until the deletion queued when it merged (left behind by
        // a crash before that, it only costs storage).
        let hidden = gens[0]
            .hidden
            .iter()
            .filter(|o| o.kind == Kind::Piece)
            .count();
        assert_eq!(hidden, usize::from(closed), "{:?}", gens[0].hidden);
        let data = fs::read(&path).unwrap();
        for (t, len) in points {
            let plan = chain::plan_part(&gens[0].parts["file"], t).unwrap();
            assert_eq!(rebuild(&store.objects(), &plan), &data[..len as usize]);
        }
    }
}

/// Redis's `#TS` marks inside each upload are points of their own, and stay points through
/// merges and a restart: each is listed at the last millisecond of the second before it, and
/// rebuilds to the file cut just before the mark.
#[test]
fn timestamp_marks_are_points_inside_uploads_and_through_merges() {
    let store = MemStore::new();
    let (dir, path, mut shipped) = followed(b"");
    let mut ses = session(&store);
    ses.compaction = Spans::parse("2s,10s").unwrap();
    let mut out = fs::OpenOptions::new().append(true).open(&path).unwrap();
    let mut want: BTreeMap<u64, u64> = BTreeMap::new();
    let (mut len, mut after, mut second) = (0u64, 0u64, 1_764_000_000u64);
    for look in 0..60u64 {
        if look == 30 {
            // A restart: the marks before are read again from the file, from byte 0.
            let (end, crc) = (
                shipped.uploaded(),
                crate::tail::source::crc_prefix(&shipped.file, len).unwrap(),
            );
            let file = fs::File::open(&path).unwrap();
            let id = FileId::of(&file.metadata().unwrap());
            shipped = Shipped::resumed(file, id, end, crc).unwrap().unwrap();
        }
        // Three seconds of writes, each opened by its mark.
        for s in 0..3 {
            second += 1;
            // A cut before a mark is a point, but for the first of a look (the look before).
            if s > 0 {
                want.insert((second - 1) * 1000 + 999, len);
            }
            let mut bytes = format!("#TS:{second}\r\n").into_bytes();
            let value = "v".repeat((look % 7) as usize);
            bytes.extend(
                format!(
                    "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n{value}\r\n",
                    value.len()
                )
                .bytes(),
            );
            out.write_all(&bytes).unwrap();
            len += bytes.len() as u64;
        }
        // The look comes during the third second, or (every other look) after it: then the
        // end of the upload is also a point at the end of that second.
        let time = match look % 2 {
            0 => second * 1000 + 500,
            _ => {
                want.insert(second * 1000 + 999, len);
                second += 1;
                second * 1000 + 200
            }
        };
        shipped
            .ship_marked(&mut ses, GEN, "file", len, (time, after, true))
            .unwrap();
        want.insert(time, len);
        after = time;
        ses.doomed.flush(&store, look % 10 == 0);
    }
    ses.doomed.flush(&store, true);
    let gens = generations(&store);
    assert!(
        gens[0].stored().len() < 40,
        "merged: {} objects",
        gens[0].stored().len()
    );
    check_points(&store, &dir, &want, 1);
}

/// A merge that fails (here: bytes of the file changed under the objects it would merge)
/// leaves the new bytes' marks their points: they go up as an object of their own.
#[test]
fn marks_keep_their_points_when_a_merge_fails() {
    let store = MemStore::new();
    let (_dir, path, mut shipped) = followed(b"");
    let mut ses = session(&store);
    ses.compaction = Spans::parse("1s").unwrap();
    let set = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n";
    let mut out = fs::OpenOptions::new().append(true).open(&path).unwrap();
    let mut look = |second: u64| {
        for s in [second, second + 1] {
            out.write_all(format!("#TS:{s}\r\n").as_bytes()).unwrap();
            out.write_all(set).unwrap();
        }
        fs::metadata(&path).unwrap().len()
    };
    let len = look(100);
    shipped
        .ship_marked(&mut ses, GEN, "file", len, (101_500, 0, true))
        .unwrap();
    // Written in place: the merge at the next window reads bytes that are not the bucket's.
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .write_all(b"#")
        .unwrap();
    let len2 = look(103);
    shipped
        .ship_marked(&mut ses, GEN, "file", len2, (104_500, 101_500, true))
        .unwrap();
    let points: Vec<(u64, u64)> = chain::recovery_points(&generations(&store))
        .iter()
        .map(|p| (p.time_ms, p.bytes))
        .collect();
    let mark = len + 9 + set.len() as u64; // the cut before #TS:104
    assert_eq!(
        points,
        [
            (100_999, 9 + set.len() as u64),
            (101_500, len),
            (103_999, mark),
            (104_500, len2)
        ]
    );
}
