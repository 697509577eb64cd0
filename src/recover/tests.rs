//! recover against a store that a persist compacts under it: the objects it planned with
//! vanish after its listing, replaced by a merged object; it lists again, plans again, and
//! rebuilds the same bytes.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::layout::index::{Entry, render};
use crate::layout::{FILE_PART, Kind, ObjectKey};
use crate::s3::mem::MemStore;
use crate::s3::{Listed, ObjectBody, S3Error};

const PREFIX: &str = "p";

fn key(start: u64, end: u64, t: u64, data: &[u8], kind: Kind) -> ObjectKey {
    ObjectKey {
        generation: 1,
        mode: Mode::File,
        part: FILE_PART.into(),
        start,
        end,
        time_ms: t,
        crc: crc32fast::hash(data),
        kind,
        seal: crate::layout::Seal::Plain,
        stored: (0, end - start),
        within: None,
    }
}

/// MemStore, but the first download puts a merged object in place of the deltas, as a
/// compacting persist would between recover's listing and its reads.
struct CompactsUnderRecover {
    inner: MemStore,
    deltas: Vec<String>,
    merged: (String, Vec<u8>),
    fired: AtomicBool,
}

impl CompactsUnderRecover {
    fn compact_once(&self) {
        if self.fired.swap(true, Ordering::SeqCst) {
            return;
        }
        let (k, body) = &self.merged;
        self.inner
            .put(k, &mut &body[..], body.len() as u64, None)
            .unwrap();
        self.inner.delete_many(&self.deltas).unwrap();
    }
}

impl ObjectStore for CompactsUnderRecover {
    fn list(&self, prefix: &str) -> std::result::Result<Vec<Listed>, S3Error> {
        self.inner.list(prefix)
    }
    fn list_folders(&self, prefix: &str) -> std::result::Result<Vec<String>, S3Error> {
        self.inner.list_folders(prefix)
    }
    fn put(
        &self,
        k: &str,
        b: &mut dyn Read,
        len: u64,
        crc: Option<u32>,
    ) -> std::result::Result<(), S3Error> {
        self.inner.put(k, b, len, crc)
    }
    fn put_if_absent(&self, k: &str, bytes: &[u8]) -> std::result::Result<bool, S3Error> {
        self.inner.put_if_absent(k, bytes)
    }
    fn get(&self, k: &str) -> std::result::Result<ObjectBody, S3Error> {
        self.compact_once();
        self.inner.get(k)
    }
    fn get_range(&self, k: &str, start: u64, end: u64) -> std::result::Result<ObjectBody, S3Error> {
        self.compact_once();
        self.inner.get_range(k, start, end)
    }
    fn delete(&self, k: &str) -> std::result::Result<(), S3Error> {
        self.inner.delete(k)
    }
    fn delete_many(&self, keys: &[String]) -> std::result::Result<Vec<(String, String)>, S3Error> {
        self.inner.delete_many(keys)
    }
}

#[test]
fn an_object_merged_away_under_recover_is_found_again() {
    let data = b"SET a 1\nSET b 2\n";
    let root = layout::root(PREFIX);
    let d1 = key(0, 8, 100, &data[..8], Kind::Delta);
    let d2 = key(8, 16, 200, &data[8..], Kind::Delta);
    let m = key(0, 16, 200, data, Kind::Merged);
    let mut merged_body = data.to_vec();
    merged_body.extend(render(
        &[
            Entry {
                end: 8,
                time_ms: 100,
                crc: d1.crc,
                stored: 8,
            },
            Entry {
                end: 16,
                time_ms: 200,
                crc: d2.crc,
                stored: 8,
            },
        ],
        false,
    ));
    let store = CompactsUnderRecover {
        inner: MemStore::new(),
        deltas: vec![d1.key(&root), d2.key(&root)],
        merged: (m.key(&root), merged_body),
        fired: AtomicBool::new(false),
    };
    for (k, bytes) in [(&d1, &data[..8]), (&d2, &data[8..])] {
        store
            .inner
            .put(&k.key(&root), &mut &bytes[..], bytes.len() as u64, None)
            .unwrap();
    }
    let dir = std::env::temp_dir().join(format!("petrify-replan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("log");
    let req = RecoverRequest {
        place: Place {
            bucket: "b".into(),
            prefix: PREFIX.into(),
        },
        file: out.clone(),
        at_ms: None,
        force: false,
        if_missing: false,
        parallel: 4,
        identity: None,
    };
    recover(&req, &store).unwrap();
    assert!(
        store.fired.load(Ordering::SeqCst),
        "the compaction happened"
    );
    assert_eq!(std::fs::read(&out).unwrap(), data);
    std::fs::remove_dir_all(&dir).unwrap();
}
