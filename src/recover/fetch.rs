//! Downloading a chain: several requests in flight at once (std threads, a bounded window),
//! each object checked against the length and CRC its key promises.
//!
//! Small objects are fetched ahead into memory and written strictly in chain order. Large ones
//! are cut into [`RANGE`] pieces fetched in parallel with ranged GETs, each streamed straight to
//! its offset in the output while its CRC-32 is computed; the pieces' CRCs are combined in
//! order and the object is proven against its key before the chain goes on.
//!
//! Why parallel: a chain of thousands of one-second deltas costs one round trip per object, and
//! one stream from a real S3 region carries less than a large Redis base wants.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::chain::Download;
use crate::error::{Error, Exit};
use crate::layout::{Kind, ObjectKey};
use crate::s3::{Backoff, ObjectStore, S3Error};
use crate::seal::Identities;

mod deep;
mod sealed;

pub use deep::crc_marks;

/// How a chain is fetched: requests in flight at once, where progress shows, and the
/// identities that open encrypted objects (`--identity`).
#[derive(Clone, Copy)]
pub struct Fetching<'a> {
    pub parallel: usize,
    pub progress: &'a super::progress::Progress,
    pub identities: Option<&'a Identities>,
}

/// Pieces fetched ahead of the one being written, at most. A window as small as the number of
/// workers stalls them all behind the one slow request at its head (bench/NOTEBOOK.md, "Tuning
/// recover").
pub const AHEAD: usize = 4096;
/// Bytes of small objects fetched (or being fetched) ahead of the one being written, at most:
/// what bounds recover's memory, with a 256 KiB buffer per worker streaming a range.
pub const AHEAD_BYTES: u64 = 24 << 20;
/// Objects up to this size are fetched whole into memory, ahead.
const SMALL: u64 = 512 << 10;
/// Larger objects are fetched in pieces of this size (the last one shorter).
pub const RANGE: u64 = 8 << 20;
/// Ranged pieces of large objects in flight at once, whatever `--parallel`: each streams at a
/// connection's full rate, so a few fill the link and more only cost CPU (bench/NOTEBOOK.md,
/// "Tuning recover"); small objects, which wait on latency, keep every worker.
pub const RANGED_AT_ONCE: usize = 16;
/// Sealed reads in flight at once, at most: each holds a decoder's window (2 MiB at zstd's
/// level 3) besides its buffers, and recover stays within 64 MiB.
pub const SEALED_AT_ONCE: usize = 4;
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

/// The pieces of a chain, in order. A sealed read is one piece, streamed and opened.
fn pieces(chain: &[Download]) -> Vec<Piece> {
    let mut out = Vec::new();
    for (i, o) in chain.iter().enumerate() {
        let mut start = o.start;
        loop {
            let end = if o.len() <= SMALL || o.sealed() {
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

/// Writes every read of `chain` (keys below `root`) at its own offset in `out`, with at most
/// `parallel` requests in flight.
pub fn fetch_chain(
    store: &dyn ObjectStore,
    root: &str,
    chain: &[Download],
    out: &File,
    how: Fetching<'_>,
) -> Result<()> {
    let (parallel, progress) = (how.parallel, how.progress);
    struct Window {
        next_fetch: usize,
        written: usize,
        /// Ranged pieces being fetched.
        ranged: usize,
        /// Of them, sealed reads.
        sealed: usize,
        /// Bytes of small objects taken and not yet written.
        ahead_bytes: u64,
        /// Workers waiting for the window to move.
        waiting: usize,
        abort: bool,
    }
    impl Window {
        /// Whether piece `i` (the next to fetch, `len` bytes, ranged or not, sealed or not)
        /// must wait.
        fn full(&self, i: usize, len: u64, (ranged, sealed): (bool, bool)) -> bool {
            i >= self.written + AHEAD
                || match ranged {
                    true => {
                        self.ranged >= RANGED_AT_ONCE || sealed && self.sealed >= SEALED_AT_ONCE
                    }
                    // The piece the writer waits for always goes (nothing is ahead of it then).
                    false => i > self.written && self.ahead_bytes + len > AHEAD_BYTES,
                }
        }
    }
    let pieces = pieces(chain);
    // Streamed to their offsets (large objects' ranges, and every sealed read) or fetched
    // into memory ahead.
    let is_ranged = |i: usize| {
        let o = &chain[pieces[i].object];
        o.len() > SMALL || o.sealed()
    };
    let len_of = |i: usize| pieces[i].end - pieces[i].start;
    let is_sealed = |i: usize| chain[pieces[i].object].sealed();
    let state = Mutex::new(Window {
        next_fetch: 0,
        written: 0,
        ranged: 0,
        sealed: 0,
        ahead_bytes: 0,
        waiting: 0,
        abort: false,
    });
    let wake = Condvar::new();
    let (tx, rx) = mpsc::channel::<(usize, Result<Fetched>)>();

    std::thread::scope(|scope| {
        for _ in 0..parallel.max(1).min(pieces.len()) {
            let tx = tx.clone();
            let (state, wake, pieces) = (&state, &wake, &pieces);
            let (is_ranged, is_sealed, len_of) = (&is_ranged, &is_sealed, &len_of);
            scope.spawn(move || {
                loop {
                    let i = {
                        let Ok(mut w) = state.lock() else { return };
                        while !w.abort
                            && w.next_fetch < pieces.len()
                            && w.full(
                                w.next_fetch,
                                len_of(w.next_fetch),
                                (is_ranged(w.next_fetch), is_sealed(w.next_fetch)),
                            )
                        {
                            w.waiting += 1;
                            w = match wake.wait(w) {
                                Ok(w) => w,
                                Err(_) => return,
                            };
                            w.waiting -= 1;
                        }
                        if w.abort || w.next_fetch >= pieces.len() {
                            return;
                        }
                        let i = w.next_fetch;
                        match is_ranged(i) {
                            true => w.ranged += 1,
                            false => w.ahead_bytes += len_of(i),
                        }
                        w.sealed += usize::from(is_sealed(i));
                        w.next_fetch += 1;
                        i
                    };
                    let piece = pieces[i];
                    let o = &chain[piece.object];
                    let r = if o.sealed() {
                        let r = sealed::fetch_sealed(store, root, o, out, how.identities)
                            .map(Fetched::Written);
                        if let Ok(mut w) = state.lock() {
                            w.ranged -= 1;
                            w.sealed -= 1;
                        }
                        wake.notify_all();
                        r
                    } else if o.len() <= SMALL {
                        fetch_small(store, root, o).map(Fetched::Bytes)
                    } else {
                        let r = fetch_range(store, root, o, (piece.start, piece.end), out)
                            .map(Fetched::Written);
                        if let Ok(mut w) = state.lock() {
                            w.ranged -= 1;
                        }
                        wake.notify_all();
                        r
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
                            return Err(
                                Error::new(Exit::Software, "download workers stopped").into()
                            );
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
                            && let Some(e) =
                                verify(o, (o.start, o.end), crc.clone().finalize(), o.crc)
                        {
                            return Err(e.into());
                        }
                    }
                }
                progress.add(piece.end - piece.start, piece.end == o.end);
                if let Ok(mut w) = state.lock() {
                    w.written = i + 1;
                    if !is_ranged(i) {
                        w.ahead_bytes -= len_of(i);
                    }
                    // Waking 64 workers for each of 10,000 small writes is most of recover's
                    // system time; most writes find none waiting.
                    if w.waiting > 0 {
                        wake.notify_all();
                    }
                }
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

fn write_error(o: &Download, e: &std::io::Error) -> Error {
    Error::new(
        Exit::Io,
        format!(
            "cannot write bytes {}..{} of the output: {e}",
            o.start, o.end
        ),
    )
}

/// Retries transient failures of one object's download; each attempt starts from scratch.
fn with_retries<T>(
    o: &dyn std::fmt::Display,
    mut attempt: impl FnMut() -> Attempt<T>,
) -> Result<T> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        match attempt() {
            Ok(v) => return Ok(v),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Transient(e)) if backoff.failures() + 1 >= ATTEMPTS => {
                return Err(Error::new(
                    Exit::Unavailable,
                    format!("downloading {o} failed {ATTEMPTS} times, last: {e}"),
                )
                .into());
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
    Fatal(FetchError),
}

type Attempt<T> = std::result::Result<T, Failure>;

/// Why a download failed, as far as the caller acts on it.
#[derive(Debug)]
pub enum FetchError {
    /// An object of the plan is gone: compaction or a prune replaced it after the listing,
    /// and listing again may find its replacement (see `recover`).
    Gone(Error),
    /// Anything else: final.
    Failed(Error),
}

impl From<Error> for FetchError {
    fn from(e: Error) -> FetchError {
        FetchError::Failed(e)
    }
}

impl From<FetchError> for Error {
    fn from(e: FetchError) -> Error {
        match e {
            FetchError::Gone(e) | FetchError::Failed(e) => e,
        }
    }
}

type Result<T> = std::result::Result<T, FetchError>;

fn get(store: &dyn ObjectStore, root: &str, o: &ObjectKey) -> Attempt<crate::s3::ObjectBody> {
    // A merged object ends with its index: its bytes are a range of it.
    let sent = match o.kind {
        Kind::Merged => store.get_range(&o.key(root), 0, o.len()),
        _ => store.get(&o.key(root)),
    };
    match sent {
        Ok(b) => match b.len {
            Some(len) if len != o.len() => Err(short_answer(o, len, o.len())),
            _ => Ok(b),
        },
        Err(e) => Err(classify(o, o.start, o.end, e)),
    }
}

/// A 200 answer whose body is not as long as asked. The listing said the object is as long as
/// its key (or it would not be planned from), so this is the store or the way to it (an empty
/// answer, a proxy cutting bodies): retried like a cut download, never called damage.
fn short_answer(o: &dyn std::fmt::Display, got: u64, asked: u64) -> Failure {
    Failure::Transient(format!(
        "the store answered with {got} bytes of object {o}, asked for {asked}"
    ))
}

/// A failed request for bytes `start..end` held by `o`: worth another attempt, or final. A
/// missing object is [`FetchError::Gone`]: compaction may have replaced it since the listing.
fn classify(o: &dyn std::fmt::Display, start: u64, end: u64, e: S3Error) -> Failure {
    match e {
        e if e.is_transient() => Failure::Transient(e.to_string()),
        e @ S3Error::Status { status: 404, .. } => Failure::Fatal(FetchError::Gone(Error::new(
            Exit::Data,
            format!("object {o} (bytes {start}..{end}) is missing from the bucket: {e}"),
        ))),
        e => Failure::Fatal(Error::s3(&format!("downloading {o}"), &e).into()),
    }
}

/// A ranged GET of `[start, end)` (offsets in the part) of `o`: its length must be the range's.
fn get_range(
    store: &dyn ObjectStore,
    root: &str,
    o: &Download,
    (start, end): (u64, u64),
) -> Attempt<crate::s3::ObjectBody> {
    let (from, to) = o.in_object(start, end);
    match store.get_range(&o.object.key(root), from, to) {
        Ok(b) if b.len == Some(to - from) => Ok(b),
        Ok(b) => Err(short_answer(&o.object, b.len.unwrap_or(0), to - from)),
        Err(e) => Err(classify(&o.object, start, end, e)),
    }
}

/// A whole read: a plain GET of a whole object, a ranged one of part of a merged object.
fn get_read(store: &dyn ObjectStore, root: &str, o: &Download) -> Attempt<crate::s3::ObjectBody> {
    match o.whole() {
        true => get(store, root, &o.object),
        false => get_range(store, root, o, (o.start, o.end)),
    }
}

fn verify(
    o: &dyn std::fmt::Display,
    (start, end): (u64, u64),
    crc: u32,
    expected: u32,
) -> Option<Error> {
    (crc != expected).then(|| {
        Error::new(
            Exit::Data,
            format!(
                "object {o} (bytes {start}..{end}) is corrupt: its CRC-32 is {crc:08x}, its key \
                 or index says {expected:08x}"
            ),
        )
    })
}

fn fetch_small(store: &dyn ObjectStore, root: &str, o: &Download) -> Result<Vec<u8>> {
    with_retries(o, || {
        let body = get_read(store, root, o)?;
        let mut buf = Vec::with_capacity(o.len() as usize);
        if let Err(e) = body.reader.take(o.len() + 1).read_to_end(&mut buf) {
            return Err(Failure::Transient(format!("reading the body: {e}")));
        }
        if buf.len() as u64 != o.len() {
            return Err(short_answer(o, buf.len() as u64, o.len()));
        }
        match verify(o, (o.start, o.end), crc32fast::hash(&buf), o.crc) {
            Some(e) => Err(Failure::Fatal(e.into())),
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
    o: &Download,
    (start, end): (u64, u64),
    out: &File,
) -> Result<u32> {
    with_retries(o, || {
        let mut body = match (start, end) == (o.start, o.end) {
            true => get_read(store, root, o)?,
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
                return Err(Failure::Fatal(write_error(o, &e).into()));
            }
            h.update(&buf[..n]);
            pos += n as u64;
        }
        Ok(h.finalize())
    })
}

#[cfg(test)]
mod tests;
