//! Both followers driven tick by tick against the in-memory store, on real files in a scratch
//! folder: append, rewrite, truncation, a change in place, resume, a Redis rewrite and a
//! restored folder, and an S3 failure. Each case rebuilds the newest point from the stored
//! objects and compares it with the files. Milliseconds, no server; the real-process suites in
//! tests/ remain the proof against s3s-fs and redis-server.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::aofdir::AofDirFollower;
use super::clock::Clock;
use super::file::FileFollower;
use super::generation::resume_plan;
use super::session::Session;
use super::upload::Uploader;
use super::{Follower, TickError};
use crate::bucket;
use crate::chain::{self, Generation};
use crate::layout::Mode;
use crate::s3::ObjectStore;
use crate::s3::mem::MemStore;

mod compaction;

const ROOT: &str = "t/petrify-v1/";

struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "petrify-followers-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn session(store: &MemStore) -> Session<'_> {
    Session {
        up: Uploader {
            store,
            root: ROOT.into(),
            max_object: 1 << 20,
            objects: 0,
            bytes: 0,
            lease: None,
            sealer: Default::default(),
        },
        clock: Clock::after(0),
        compaction: None,
        doomed: Default::default(),
    }
}

fn generations(store: &MemStore) -> Vec<Generation> {
    bucket::survey(store, ROOT).unwrap().generations
}

/// The newest generation's number and each part's bytes as of its newest point, rebuilt from
/// the stored objects.
fn newest(store: &MemStore) -> (u64, BTreeMap<String, Vec<u8>>) {
    let gens = generations(store);
    let g = gens.iter().max_by_key(|g| g.id).unwrap();
    let objects = store.objects();
    let mut parts = BTreeMap::new();
    for (name, objs) in &g.parts {
        let plan = chain::plan_part(objs, u64::MAX).unwrap();
        parts.insert(name.clone(), rebuild(&objects, &plan));
    }
    (g.id.number, parts)
}

/// The bytes a planned chain rebuilds, from the stored objects.
fn rebuild(objects: &BTreeMap<String, Vec<u8>>, plan: &[crate::layout::ObjectKey]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for r in chain::downloads(plan) {
        let (a, b) = r.stored;
        let stored = &objects[&r.object.key(ROOT)][a as usize..b as usize];
        if !r.sealed() {
            bytes.extend_from_slice(stored);
            continue;
        }
        let ids = crate::seal::Identities::of(vec![test_key()]);
        crate::seal::open(
            &mut &stored[..],
            r.object.seal,
            (&r.units, b - a),
            (Some(&ids), r.len()),
            &mut |b| {
                bytes.extend_from_slice(b);
                Ok(())
            },
        )
        .unwrap_or_else(|e| panic!("{}: {e:?}", r.object));
    }
    bytes
}

/// The age key the sealed tests encrypt to.
fn test_key() -> age::x25519::Identity {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    use age::secrecy::ExposeSecret;
    KEY.get_or_init(|| {
        age::x25519::Identity::generate()
            .to_string()
            .expose_secret()
            .to_string()
    })
    .parse()
    .unwrap()
}

fn append(path: &Path, bytes: &[u8]) {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

fn file_follower(path: &Path, store: &MemStore) -> FileFollower {
    let gens = generations(store);
    let next = gens.iter().map(|g| g.id.number).max().unwrap_or(0) + 1;
    // No grace: a replaced file is left as soon as it is fully uploaded.
    FileFollower::new(
        path.to_path_buf(),
        Duration::ZERO,
        next,
        resume_plan(&gens, Mode::File).ok(),
        false,
    )
}

fn assert_file(store: &MemStore, generation: u64, path: &Path) {
    let (g, parts) = newest(store);
    assert_eq!(g, generation);
    assert_eq!(parts["file"], fs::read(path).unwrap());
}

#[test]
fn the_file_follower_through_append_rewrite_truncation_and_change_in_place() {
    let dir = Scratch::new();
    let path = dir.0.join("log");
    let store = MemStore::new();
    let mut ses = session(&store);
    let mut f = file_follower(&path, &store);

    f.tick(&mut ses).unwrap(); // not there yet: waited for
    assert!(store.objects().is_empty());
    append(&path, b"first line\n");
    f.tick(&mut ses).unwrap();
    assert_file(&store, 1, &path);
    append(&path, b"second line\n");
    f.tick(&mut ses).unwrap();
    assert_file(&store, 1, &path);
    f.tick(&mut ses).unwrap(); // idle: no request
    let requests = store.requests.load(Ordering::SeqCst);
    f.tick(&mut ses).unwrap();
    assert_eq!(store.requests.load(Ordering::SeqCst), requests);

    // A rewrite renamed over the path, after one more append to the old file.
    append(&path, b"old tail\n");
    let old = fs::read(&path).unwrap();
    fs::write(dir.0.join("new"), b"compacted\n").unwrap();
    fs::rename(dir.0.join("new"), &path).unwrap();
    f.tick(&mut ses).unwrap();
    assert_file(&store, 2, &path);
    let gens = generations(&store);
    let g1 = &gens[0].parts["file"];
    assert_eq!(
        chain::chain_crc(&chain::plan_part(g1, u64::MAX).unwrap()).0,
        old.len() as u64
    );

    // Truncated in place, then written past the old length before the next look.
    fs::write(&path, b"a different history, longer than before\n").unwrap();
    f.tick(&mut ses).unwrap();
    assert_file(&store, 3, &path);

    // Changed in place, same length.
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(b"A", 0).unwrap();
    f.tick(&mut ses).unwrap();
    assert_file(&store, 4, &path);

    // Truncated to less.
    file.set_len(5).unwrap();
    f.tick(&mut ses).unwrap();
    assert_file(&store, 5, &path);
}

#[test]
fn the_file_follower_resumes_and_retries_after_a_failed_upload() {
    let dir = Scratch::new();
    let path = dir.0.join("log");
    let store = MemStore::new();
    append(&path, b"0123456789");
    {
        let mut ses = session(&store);
        let mut f = file_follower(&path, &store);
        f.tick(&mut ses).unwrap();
    }
    append(&path, b"written while persist was down\n");
    let mut ses = session(&store);
    let mut f = file_follower(&path, &store);
    f.tick(&mut ses).unwrap();
    assert_file(&store, 1, &path); // the same generation, continued
    assert_eq!(store.objects().len(), 2);

    store.fail_next.store(1, Ordering::SeqCst);
    append(&path, b"during an S3 failure\n");
    assert!(matches!(f.tick(&mut ses), Err(TickError::S3(_))));
    append(&path, b"after it\n");
    f.tick(&mut ses).unwrap();
    assert_file(&store, 1, &path);
    assert_eq!(
        store.objects().len(),
        3,
        "the retry carries both appends in one object"
    );

    // Rewritten while persist was down: not resumed.
    fs::write(
        &path,
        b"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
    )
    .unwrap();
    let mut f = file_follower(&path, &store);
    f.tick(&mut ses).unwrap();
    assert_file(&store, 2, &path);
}

/// A Redis 7 folder written by hand, the way Redis lays it out.
struct Folder {
    dir: PathBuf,
}

impl Folder {
    fn new(parent: &Path) -> Folder {
        let dir = parent.join("appendonlydir");
        fs::create_dir_all(&dir).unwrap();
        let f = Folder { dir };
        f.write_generation(
            1,
            b"REDIS0011-base-one",
            b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n",
        );
        f
    }

    /// What BGREWRITEAOF leaves: a new base and incremental file, the manifest renamed over
    /// the old one, the old files deleted.
    fn write_generation(&self, n: u32, base: &[u8], incr: &[u8]) {
        let base_name = format!("appendonly.aof.{n}.base.rdb");
        let incr_name = format!("appendonly.aof.{n}.incr.aof");
        fs::write(self.dir.join(&base_name), base).unwrap();
        fs::write(self.dir.join(&incr_name), incr).unwrap();
        let manifest =
            format!("file {base_name} seq {n} type b\nfile {incr_name} seq {n} type i\n");
        fs::write(self.dir.join("tmp.manifest.new"), manifest).unwrap();
        fs::rename(
            self.dir.join("tmp.manifest.new"),
            self.dir.join("appendonly.aof.manifest"),
        )
        .unwrap();
        if n > 1 {
            fs::remove_file(self.dir.join(format!("appendonly.aof.{}.base.rdb", n - 1))).unwrap();
            fs::remove_file(self.dir.join(format!("appendonly.aof.{}.incr.aof", n - 1))).unwrap();
        }
    }

    fn files(&self) -> BTreeMap<String, Vec<u8>> {
        fs::read_dir(&self.dir)
            .unwrap()
            .flatten()
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (name, fs::read(e.path()).unwrap())
            })
            .collect()
    }
}

fn dir_follower(dir: &Path, store: &MemStore) -> AofDirFollower {
    let gens = generations(store);
    let next = gens.iter().map(|g| g.id.number).max().unwrap_or(0) + 1;
    AofDirFollower::new(dir, resume_plan(&gens, Mode::AofDir).ok(), next).unwrap()
}

#[test]
fn the_folder_follower_through_appends_a_rewrite_resume_and_a_restore() {
    let scratch = Scratch::new();
    let folder = Folder::new(&scratch.0);
    let store = MemStore::new();
    let mut ses = session(&store);
    let mut f = dir_follower(&folder.dir, &store);
    f.tick(&mut ses).unwrap();
    assert_eq!(newest(&store), (1, folder.files()));

    let incr = folder.dir.join("appendonly.aof.1.incr.aof");
    append(&incr, b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n");
    f.tick(&mut ses).unwrap();
    assert_eq!(newest(&store), (1, folder.files()));
    let requests = store.requests.load(Ordering::SeqCst);
    f.tick(&mut ses).unwrap(); // idle: no request
    assert_eq!(store.requests.load(Ordering::SeqCst), requests);

    // BGREWRITEAOF: a new base is a new generation.
    folder.write_generation(2, b"REDIS0011-base-two", b"");
    f.tick(&mut ses).unwrap();
    assert_eq!(newest(&store), (2, folder.files()));

    // A restart resumes generation 2: no file is uploaded again, only the manifest (a few
    // lines: the first look after a start records it as a point of its own).
    let before = store.objects();
    let mut f = dir_follower(&folder.dir, &store);
    f.tick(&mut ses).unwrap();
    let after = store.objects();
    let new: Vec<&String> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    assert_eq!(new.len(), 1, "{new:?}");
    assert!(new[0].contains("/appendonly.aof.manifest/"), "{new:?}");
    append(
        &folder.dir.join("appendonly.aof.2.incr.aof"),
        b"*1\r\n$4\r\nPING\r\n",
    );
    f.tick(&mut ses).unwrap();
    assert_eq!(newest(&store), (2, folder.files()));

    // The folder restored under the running follower: same names, other files.
    let aside = scratch.0.join("aside");
    fs::rename(&folder.dir, &aside).unwrap();
    let restored = Folder::new(&scratch.0);
    restored.write_generation(2, b"REDIS0011-base-two", b"*1\r\n$4\r\nPING\r\n");
    fs::remove_dir_all(&aside).unwrap();
    append(
        &restored.dir.join("appendonly.aof.2.incr.aof"),
        b"after the restore",
    );
    f.tick(&mut ses).unwrap();
    assert_eq!(newest(&store), (3, restored.files()));
}

/// A store that truncates the followed file just as an upload starts: the upload fails as a
/// read of the file (retried by looking again), not as a network error.
struct ShrinksTheFile<'a> {
    inner: MemStore,
    path: &'a Path,
}

impl ObjectStore for ShrinksTheFile<'_> {
    fn list(&self, prefix: &str) -> Result<Vec<crate::s3::Listed>, crate::s3::S3Error> {
        self.inner.list(prefix)
    }
    fn list_folders(&self, prefix: &str) -> Result<Vec<String>, crate::s3::S3Error> {
        self.inner.list_folders(prefix)
    }
    fn delete_many(&self, keys: &[String]) -> Result<Vec<(String, String)>, crate::s3::S3Error> {
        self.inner.delete_many(keys)
    }
    fn put(
        &self,
        key: &str,
        body: &mut dyn std::io::Read,
        len: u64,
        crc32: Option<u32>,
    ) -> Result<(), crate::s3::S3Error> {
        let f = fs::OpenOptions::new().write(true).open(self.path).unwrap();
        if f.metadata().unwrap().len() > 10 {
            f.set_len(10).unwrap();
        }
        self.inner.put(key, body, len, crc32)
    }
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool, crate::s3::S3Error> {
        self.inner.put_if_absent(key, bytes)
    }
    fn get(&self, key: &str) -> Result<crate::s3::ObjectBody, crate::s3::S3Error> {
        self.inner.get(key)
    }
    fn get_range(
        &self,
        key: &str,
        start: u64,
        end: u64,
    ) -> Result<crate::s3::ObjectBody, crate::s3::S3Error> {
        self.inner.get_range(key, start, end)
    }
    fn delete(&self, key: &str) -> Result<(), crate::s3::S3Error> {
        self.inner.delete(key)
    }
}

#[test]
fn a_file_that_shrinks_during_an_upload_is_a_read_failure_then_a_new_look() {
    let dir = Scratch::new();
    let path = dir.0.join("log");
    // Larger than what is buffered: streamed from the file while it is sent.
    fs::write(&path, vec![b'x'; 9 << 20]).unwrap();
    let store = ShrinksTheFile {
        inner: MemStore::new(),
        path: &path,
    };
    let mut ses = session(&store.inner);
    ses.up.store = &store;
    ses.up.max_object = 16 << 20; // one object, streamed
    let mut f = file_follower(&path, &store.inner);
    assert!(matches!(f.tick(&mut ses), Err(TickError::Read(_))));
    f.tick(&mut ses).unwrap();
    assert_file(&store.inner, 1, &path);
    assert_eq!(fs::read(&path).unwrap(), b"xxxxxxxxxx");
}

/// A range over the buffered size goes up in objects of at most `max_object`, their CRCs
/// computed ahead by a helper thread: each object's key names its own bytes, and together they
/// are one point holding the whole file; a later append continues the chain.
#[test]
fn a_large_range_goes_up_in_pipelined_objects_of_one_time() {
    let dir = Scratch::new();
    let path = dir.0.join("log");
    let store = MemStore::new();
    let mut ses = session(&store); // max_object 1 MiB
    let mut f = file_follower(&path, &store);
    let big: Vec<u8> = (0..(9u32 << 20) + 12_345)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    append(&path, &big);
    f.tick(&mut ses).unwrap();
    assert_file(&store, 1, &path);
    let gens = generations(&store);
    let objs = &gens[0].parts["file"];
    assert_eq!(objs.len(), 10, "9 MiB and a bit in 1 MiB objects");
    assert!(
        objs.iter()
            .all(|o| o.time_ms == objs[0].time_ms && o.len() <= 1 << 20)
    );
    for o in objs {
        assert_eq!(crc32fast::hash(&store.objects()[&o.key(ROOT)]), o.crc);
    }
    assert_eq!(chain::recovery_points(&gens).len(), 1);
    append(&path, b"and one more line\n");
    f.tick(&mut ses).unwrap();
    assert_file(&store, 1, &path);
}
