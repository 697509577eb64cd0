//! Downloading a chain: several requests in flight at once (std threads, a bounded window),
//! each object checked against the length and CRC its key promises.
//!
//! Small objects are fetched ahead into memory and written strictly in chain order. Large ones
//! are cut into [`RANGE`] pieces fetched in parallel with ranged GETs, each streamed straight to
//! its offset in the output while its CRC-32 is computed; the pieces' CRCs are combined in
//! order and the object is proven against its key before the chain goes on.
//!
//! Why parallel: a chain of thousands of one-second deltas costs one round trip per object (on
//! real S3 10-50 ms each, on local test servers without TCP_NODELAY about 40 ms), and one
//! stream from a real S3 region carries 50-100 MiB/s, where a large Redis base wants more.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::error::{Error, Exit, Result};
use crate::layout::ObjectKey;
use crate::s3::{Backoff, ObjectStore, S3Error};

/// Requests in flight at once unless `--parallel` says otherwise. Each small request waits on
/// latency, not bandwidth, and a real region adds 10-50 ms to each: on 10,000 deltas through
/// 20 ms of added latency (bench/run), 32 workers took 17 s, 64 about 10 s. Memory stays
/// bounded whatever the number (see WINDOW and SMALL).
pub const DEFAULT_PARALLEL: usize = 64;
/// Pieces fetched ahead of the one being written.
const WINDOW: usize = 64;
/// Objects up to this size are fetched whole into memory, ahead. Memory: at most WINDOW x
/// SMALL (32 MiB), plus a 256 KiB buffer per worker streaming a range.
const SMALL: u64 = 512 << 10;
/// Larger objects are fetched in pieces of this size (the last one shorter).
pub const RANGE: u64 = 8 << 20;
/// Attempts per piece before a transient failure is final.
const ATTEMPTS: u32 = 6;

/// One request: a whole object (`start..end` its own range), or a range of a large one.
#[derive(Debug, Clone, Copy)]
struct Piece {
    /// Index in the chain.
    object: usize,
    start: u64,
    end: u64,
}

/// What a worker brings back.
enum Fetched {
    /// A small object's bytes, checked, for the writer to write in order.
    Bytes(Vec<u8>),
    /// A piece already written at its offsets, and its bytes' CRC-32.
    Written(u32),
}

/// The pieces of a chain, in order.
fn pieces(chain: &[ObjectKey]) -> Vec<Piece> {
    let mut out = Vec::new();
    for (i, o) in chain.iter().enumerate() {
        let mut start = o.start;
        loop {
            let end = if o.len() <= SMALL {
                o.end
            } else {
                o.end.min(start.saturating_add(RANGE))
            };
            out.push(Piece {
                object: i,
                start,
                end,
            });
            start = end;
            if start >= o.end {
                break;
            }
        }
    }
    out
}

/// Writes every object of `chain` (keys below `root`) at its own offset in `out`, with at most
/// `parallel` requests in flight.
pub fn fetch_chain(
    store: &dyn ObjectStore,
    root: &str,
    chain: &[ObjectKey],
    out: &File,
    (parallel, progress): (usize, &super::progress::Progress),
) -> Result<()> {
    struct Window {
        next_fetch: usize,
        written: usize,
        abort: bool,
    }
    let pieces = pieces(chain);
    let state = Mutex::new(Window {
        next_fetch: 0,
        written: 0,
        abort: false,
    });
    let wake = Condvar::new();
    let (tx, rx) = mpsc::channel::<(usize, Result<Fetched>)>();

    std::thread::scope(|scope| {
        for _ in 0..parallel.max(1).min(pieces.len()) {
            let tx = tx.clone();
            let (state, wake, pieces) = (&state, &wake, &pieces);
            scope.spawn(move || {
                loop {
                    let i = {
                        let Ok(mut w) = state.lock() else { return };
                        while !w.abort
                            && w.next_fetch < pieces.len()
                            && w.next_fetch >= w.written + WINDOW
                        {
                            w = match wake.wait(w) {
                                Ok(w) => w,
                                Err(_) => return,
                            };
                        }
                        if w.abort || w.next_fetch >= pieces.len() {
                            return;
                        }
                        w.next_fetch += 1;
                        w.next_fetch - 1
                    };
                    let piece = pieces[i];
                    let o = &chain[piece.object];
                    let r = if o.len() <= SMALL {
                        fetch_small(store, root, o).map(Fetched::Bytes)
                    } else {
                        fetch_range(store, root, o, (piece.start, piece.end), out)
                            .map(Fetched::Written)
                    };
                    if tx.send((i, r)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);

        let result = (|| {
            let mut ready: BTreeMap<usize, Fetched> = BTreeMap::new();
            let mut crc = crc32fast::Hasher::new();
            for (i, piece) in pieces.iter().enumerate() {
                let fetched = loop {
                    if let Some(f) = ready.remove(&i) {
                        break f;
                    }
                    match rx.recv() {
                        Ok((j, r)) => {
                            ready.insert(j, r?);
                        }
                        Err(_) => {
                            return Err(Error::new(Exit::Software, "download workers stopped"));
                        }
                    }
                };
                let o = &chain[piece.object];
                match fetched {
                    Fetched::Bytes(bytes) => out
                        .write_all_at(&bytes, o.start)
                        .map_err(|e| write_error(o, &e))?,
                    Fetched::Written(piece_crc) => {
                        if piece.start == o.start {
                            crc = crc32fast::Hasher::new();
                        }
                        crc.combine(&crc32fast::Hasher::new_with_initial_len(
                            piece_crc,
                            piece.end - piece.start,
                        ));
                        if piece.end == o.end
                            && let Some(e) = verify(o, crc.clone().finalize())
                        {
                            return Err(e);
                        }
                    }
                }
                progress.add(piece.end - piece.start, piece.end == o.end);
                if let Ok(mut w) = state.lock() {
                    w.written = i + 1;
                }
                wake.notify_all();
            }
            Ok(())
        })();
        if let Ok(mut w) = state.lock() {
            w.abort = true;
        }
        wake.notify_all();
        result
    })
}

/// Reads all of object `o` and returns the CRC-32 of its first `len` bytes for each of `marks`
/// (ascending, each at most `o.len()`), having checked that the whole object matches its key.
/// For `verify --deep`: no byte is kept.
pub fn crc_marks(
    store: &dyn ObjectStore,
    root: &str,
    o: &ObjectKey,
    marks: &[u64],
) -> Result<Vec<u32>> {
    with_retries(o, || {
        let mut body = get(store, root, o)?;
        let (mut h, mut pos, mut out) = (crc32fast::Hasher::new(), 0u64, Vec::new());
        let mut buf = vec![0u8; 256 << 10];
        let mut marks = marks.iter().copied().peekable();
        loop {
            while marks.peek() == Some(&pos) {
                marks.next();
                out.push(h.clone().finalize());
            }
            let room = marks
                .peek()
                .map_or(buf.len() as u64, |m| (m - pos).min(buf.len() as u64));
            let n = match body.reader.read(&mut buf[..room.max(1) as usize]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Err(Failure::Transient(format!("reading {o}: {e}"))),
            };
            h.update(&buf[..n]);
            pos += n as u64;
        }
        if pos != o.len() {
            return Err(Failure::Fatal(Error::new(
                Exit::Data,
                format!("object {o} holds {pos} bytes, its key says {}", o.len()),
            )));
        }
        match verify(o, h.finalize()) {
            Some(e) => Err(Failure::Fatal(e)),
            None => Ok(out),
        }
    })
}

fn write_error(o: &ObjectKey, e: &std::io::Error) -> Error {
    Error::new(
        Exit::Io,
        format!(
            "cannot write bytes {}..{} of the output: {e}",
            o.start, o.end
        ),
    )
}

/// Retries transient failures of one object's download; each attempt starts from scratch.
fn with_retries<T>(o: &ObjectKey, mut attempt: impl FnMut() -> Attempt<T>) -> Result<T> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        match attempt() {
            Ok(v) => return Ok(v),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Transient(e)) if backoff.failures() + 1 >= ATTEMPTS => {
                return Err(Error::new(
                    Exit::Unavailable,
                    format!("downloading {o} failed {ATTEMPTS} times, last: {e}"),
                ));
            }
            Err(Failure::Transient(e)) => {
                log::debug!("downloading {o}: {e}; retrying");
                std::thread::sleep(backoff.next_delay());
            }
        }
    }
}

enum Failure {
    Transient(String),
    Fatal(Error),
}

type Attempt<T> = std::result::Result<T, Failure>;

fn get(store: &dyn ObjectStore, root: &str, o: &ObjectKey) -> Attempt<crate::s3::ObjectBody> {
    match store.get(&o.key(root)) {
        Ok(b) => {
            if let Some(len) = b.len
                && len != o.len()
            {
                return Err(Failure::Fatal(Error::new(
                    Exit::Data,
                    format!("object {o} holds {len} bytes, its key says {}", o.len()),
                )));
            }
            Ok(b)
        }
        Err(e) => Err(classify(o, e)),
    }
}

/// A failed request for `o`: worth another attempt, or final.
fn classify(o: &ObjectKey, e: S3Error) -> Failure {
    match e {
        e if e.is_transient() => Failure::Transient(e.to_string()),
        e @ S3Error::Status { status: 404, .. } => Failure::Fatal(Error::new(
            Exit::Data,
            format!(
                "object {o} (bytes {}..{}) is missing from the bucket: {e}",
                o.start, o.end
            ),
        )),
        e => Failure::Fatal(Error::s3(&format!("downloading {o}"), &e)),
    }
}

/// A ranged GET of `[start, end)` (offsets in the part) of `o`: its length must be the range's.
fn get_range(
    store: &dyn ObjectStore,
    root: &str,
    o: &ObjectKey,
    (start, end): (u64, u64),
) -> Attempt<crate::s3::ObjectBody> {
    let (from, to) = (start - o.start, end - o.start);
    match store.get_range(&o.key(root), from, to) {
        Ok(b) if b.len == Some(to - from) => Ok(b),
        Ok(b) => Err(Failure::Fatal(Error::new(
            Exit::Data,
            format!(
                "object {o}: asked for bytes {from}..{to}, the store answered with {} bytes",
                b.len
                    .map_or("an unknown number of".to_string(), |n| n.to_string())
            ),
        ))),
        Err(e) => Err(classify(o, e)),
    }
}

fn verify(o: &ObjectKey, crc: u32) -> Option<Error> {
    (crc != o.crc).then(|| {
        Error::new(
            Exit::Data,
            format!(
                "object {o} (bytes {}..{}) is corrupt: its CRC-32 is {crc:08x}, its key says {:08x}",
                o.start, o.end, o.crc
            ),
        )
    })
}

fn fetch_small(store: &dyn ObjectStore, root: &str, o: &ObjectKey) -> Result<Vec<u8>> {
    with_retries(o, || {
        let body = get(store, root, o)?;
        let mut buf = Vec::with_capacity(o.len() as usize);
        if let Err(e) = body.reader.take(o.len() + 1).read_to_end(&mut buf) {
            return Err(Failure::Transient(format!("reading the body: {e}")));
        }
        if buf.len() as u64 > o.len() {
            return Err(Failure::Fatal(Error::new(
                Exit::Data,
                format!(
                    "object {o} holds more bytes than its key says ({})",
                    o.len()
                ),
            )));
        }
        if buf.len() as u64 != o.len() {
            return Err(Failure::Transient(format!(
                "got {} of {} bytes",
                buf.len(),
                o.len()
            )));
        }
        match verify(o, crc32fast::hash(&buf)) {
            Some(e) => Err(Failure::Fatal(e)),
            None => Ok(buf),
        }
    })
}

/// Fetches `[start, end)` of a large object (the whole object with a plain GET, else a ranged
/// one) straight into `out` at those offsets; returns the CRC-32 of the bytes written. Each
/// attempt starts the piece over.
fn fetch_range(
    store: &dyn ObjectStore,
    root: &str,
    o: &ObjectKey,
    (start, end): (u64, u64),
    out: &File,
) -> Result<u32> {
    with_retries(o, || {
        let mut body = match (start, end) == (o.start, o.end) {
            true => get(store, root, o)?,
            false => get_range(store, root, o, (start, end))?,
        };
        let mut h = crc32fast::Hasher::new();
        let mut buf = vec![0u8; 256 << 10];
        let mut pos = start;
        while pos < end {
            let want = ((end - pos) as usize).min(buf.len());
            let n = match body.reader.read(&mut buf[..want]) {
                Ok(0) => return Err(Failure::Transient(format!("body ended at byte {pos}"))),
                Ok(n) => n,
                Err(e) => return Err(Failure::Transient(format!("reading the body: {e}"))),
            };
            if let Err(e) = out.write_all_at(&buf[..n], pos) {
                return Err(Failure::Fatal(write_error(o, &e)));
            }
            h.update(&buf[..n]);
            pos += n as u64;
        }
        Ok(h.finalize())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{FILE_PART, Kind, Mode};
    use crate::recover::progress::Progress;
    use crate::s3::mem::MemStore;

    const ROOT: &str = "t/petrify-v1/";

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
        let p = pieces(&chain);
        // One small, four ranges of the large object (the last one shorter), one small.
        assert_eq!(p.len(), 6);
        assert_eq!((p[1].start, p[1].end), (100, 100 + RANGE));
        assert_eq!(p[4].end, small as u64);
        for parallel in [1, 4, 32] {
            let (path, out) = temp_file(&format!("ok{parallel}"));
            fetch_chain(&store, ROOT, &chain, &out, (parallel, &Progress::none())).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), bytes);
            std::fs::remove_file(&path).unwrap();
        }

        // One flipped byte in the middle of the large object: named, never accepted.
        let mut bad = bytes.clone();
        bad[RANGE as usize * 2] ^= 1;
        let key = chain[1].key(ROOT);
        let body = &bad[100..small];
        store
            .put(&key, &mut &body[..], body.len() as u64, None)
            .unwrap();
        let (path, out) = temp_file("bad");
        let e = fetch_chain(&store, ROOT, &chain, &out, (8, &Progress::none())).unwrap_err();
        assert_eq!(e.exit, Exit::Data);
        assert!(e.message.contains("is corrupt"), "{}", e.message);
        std::fs::remove_file(&path).unwrap();
    }
}
