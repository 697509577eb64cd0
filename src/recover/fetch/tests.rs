//! Downloading chains from an in-memory store.

use super::*;
use crate::layout::{FILE_PART, Kind, Mode};
use crate::recover::progress::Progress;
use crate::s3::mem::MemStore;

const ROOT: &str = "t/petrify-v1/";

fn how(parallel: usize) -> Fetching<'static> {
    static NONE: std::sync::OnceLock<Progress> = std::sync::OnceLock::new();
    Fetching {
        parallel,
        progress: NONE.get_or_init(Progress::none),
        identities: None,
    }
}

fn data(n: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_u32;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Stores `bytes[start..end]` as one object and returns its key.
fn object(store: &MemStore, bytes: &[u8], (start, end): (usize, usize), t: u64) -> ObjectKey {
    let body = &bytes[start..end];
    let k = ObjectKey {
        generation: 1,
        mode: Mode::File,
        part: FILE_PART.into(),
        start: start as u64,
        end: end as u64,
        time_ms: t,
        crc: crc32fast::hash(body),
        kind: Kind::Delta,
        seal: crate::layout::Seal::Plain,
        stored: (0, (end - start) as u64),
        within: None,
    };
    store
        .put(&k.key(ROOT), &mut &body[..], body.len() as u64, None)
        .unwrap();
    k
}

fn temp_file(name: &str) -> (std::path::PathBuf, File) {
    let p = std::env::temp_dir().join(format!("petrify-fetch-{name}-{}", std::process::id()));
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    (p, f)
}

#[test]
fn large_objects_come_in_ranges_and_every_byte_is_proven() {
    let bytes = data(3 * RANGE as usize + 12_345);
    let store = MemStore::new();
    let small = bytes.len() - 1000;
    let chain = vec![
        object(&store, &bytes, (0, 100), 1),
        object(&store, &bytes, (100, small), 2),
        object(&store, &bytes, (small, bytes.len()), 3),
    ];
    let chain = crate::chain::downloads(&chain);
    let p = pieces(&chain);
    // One small, four ranges of the large object (the last one shorter), one small.
    assert_eq!(p.len(), 6);
    assert_eq!((p[1].start, p[1].end), (100, 100 + RANGE));
    assert_eq!(p[4].end, small as u64);
    for parallel in [1, 4, 32] {
        let (path, out) = temp_file(&format!("ok{parallel}"));
        fetch_chain(&store, ROOT, &chain, &out, how(parallel)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        std::fs::remove_file(&path).unwrap();
    }

    // One flipped byte in the middle of the large object: named, never accepted.
    let mut bad = bytes.clone();
    bad[RANGE as usize * 2] ^= 1;
    let key = chain[1].object.key(ROOT);
    let body = &bad[100..small];
    store
        .put(&key, &mut &body[..], body.len() as u64, None)
        .unwrap();
    let (path, out) = temp_file("bad");
    let e = fetch_chain(&store, ROOT, &chain, &out, how(8)).unwrap_err();
    let FetchError::Failed(e) = e else {
        panic!("{e:?}")
    };
    assert_eq!(e.exit, Exit::Data);
    assert!(e.message.contains("is corrupt"), "{}", e.message);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_point_inside_a_merged_object_is_its_prefix_and_a_missing_object_is_gone() {
    use crate::layout::index::{Entry, Line, render};
    let store = MemStore::new();
    let bytes = data(3000);
    let mut m = object(&store, &bytes, (0, 3000), 9);
    m.kind = Kind::Merged;
    let entries = [
        Entry {
            end: 1000,
            time_ms: 5,
            crc: crc32fast::hash(&bytes[..1000]),
            stored: 1000,
        },
        Entry {
            end: 3000,
            time_ms: 9,
            crc: crc32fast::hash(&bytes[1000..]),
            stored: 2000,
        },
    ];
    let mut body = bytes.clone();
    body.extend(render(&entries, false));
    store
        .put(&m.key(ROOT), &mut &body[..], body.len() as u64, None)
        .unwrap();
    let points = Line::new(&m, &entries).pieces();
    for (upto, want) in [(1, &bytes[..1000]), (2, &bytes[..])] {
        let reads = crate::chain::downloads(&points[..upto]);
        assert_eq!(reads.len(), 1);
        let (path, out) = temp_file(&format!("merged{upto}"));
        fetch_chain(&store, ROOT, &reads, &out, how(4)).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            want,
            "the index trailer stays out"
        );
        std::fs::remove_file(&path).unwrap();
    }
    store.delete(&m.key(ROOT)).unwrap();
    let (path, out) = temp_file("gone");
    let e = fetch_chain(
        &store,
        ROOT,
        &crate::chain::downloads(&points),
        &out,
        how(4),
    )
    .unwrap_err();
    assert!(matches!(e, FetchError::Gone(_)), "{e:?}");
    std::fs::remove_file(&path).unwrap();
}

/// A 200 answer with an empty body is the store's fault, not damage in the bucket: retried,
/// and when it keeps coming, a store error (69), never "corrupt" (65).
#[test]
fn an_empty_answer_is_retried_as_a_store_fault() {
    let bytes = data(2 * RANGE as usize + 500);
    let store = MemStore::new();
    let chain = crate::chain::downloads(&[
        object(&store, &bytes, (0, 300), 1),
        object(&store, &bytes, (300, bytes.len()), 2),
    ]);
    store
        .empty_answers
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let (path, out) = temp_file("empty");
    fetch_chain(&store, ROOT, &chain, &out, how(4)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    store
        .empty_answers
        .store(1000, std::sync::atomic::Ordering::SeqCst);
    let e = Error::from(fetch_chain(&store, ROOT, &chain, &out, how(4)).unwrap_err());
    assert_eq!(e.exit, Exit::Unavailable, "{}", e.message);
    assert!(e.message.contains("answered with 0 bytes"), "{}", e.message);
    std::fs::remove_file(&path).unwrap();
}
