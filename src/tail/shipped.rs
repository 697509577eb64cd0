//! An open file's progress into a generation ([`Shipped`]), what identifies a file
//! ([`FileId`]), and how a path to follow is opened ([`open_followed`]). Shared by both
//! followers.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::chain::GenId;
use crate::compaction;
use crate::error::{Error, Exit, Result};
use crate::layout::Seal;
use crate::marks::{self, Scanner};

use super::compaction::Merge;
use super::held::Held;
use super::proof::{self, Witness};
use super::session::Session;
use super::source::{crc_prefix, mtime_ms, read_exact_at};
use super::upload::{BUFFER_LIMIT, UploadError};

/// (device, inode): what a path refers to, so that a file renamed over it is noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(m: &std::fs::Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// An open file's progress into one generation: how much of it the bucket holds, and what
/// proves those bytes are still the file's. Shared by the single-file and the Redis-folder
/// followers.
pub struct Shipped {
    pub file: File,
    /// What the file was when opened: a path naming another file now was replaced.
    pub id: FileId,
    /// The uploaded prefix `[0, witness.len())`, and what it looked like as sent.
    witness: Witness,
    /// Whether the generation holds this file's first object. It is uploaded even when empty,
    /// so that a file truncated to nothing, or a new empty incremental file, is in the point.
    in_bucket: bool,
    /// The objects the uploaded prefix is made of, in order: what compaction merges.
    held: Vec<Held>,
    /// Where the file's `#TS` marks stand, once they are looked for (see [`Shipped::ship_marked`]).
    scanner: Option<Scanner>,
}

impl Shipped {
    /// A file the generation holds nothing of yet.
    pub fn new(file: File, id: FileId) -> Shipped {
        Shipped {
            file,
            id,
            witness: Witness::empty(),
            in_bucket: false,
            held: Vec::new(),
            scanner: None,
        }
    }

    /// A file whose first `end` bytes, with CRC-32 `crc`, the bucket already holds (a resumed
    /// chain): checked here. `Ok(Err(file))` when the file no longer starts with exactly those
    /// bytes.
    pub fn resumed(
        file: File,
        id: FileId,
        end: u64,
        crc: u32,
    ) -> io::Result<std::result::Result<Shipped, File>> {
        if file.metadata()?.len() < end || crc_prefix(&file, end)? != crc {
            return Ok(Err(file));
        }
        let witness = Witness::resumed(&file, end, crc)?;
        Ok(Ok(Shipped {
            file,
            id,
            witness,
            in_bucket: true,
            held: Vec::new(),
            scanner: None,
        }))
    }

    /// How many objects the uploaded prefix is made of.
    #[cfg(test)]
    pub fn held_count(&self) -> usize {
        self.held.len()
    }

    /// The objects a resumed prefix is made of (for compaction).
    pub fn hold(&mut self, held: Vec<Held>) {
        if held.last().map(|h| h.end) == Some(self.uploaded()) {
            self.held = held;
        }
    }

    pub fn uploaded(&self) -> u64 {
        self.witness.len()
    }

    pub fn in_bucket(&self) -> bool {
        self.in_bucket
    }

    /// Whether a length of `len` calls for an upload.
    pub fn behind(&self, len: u64) -> bool {
        !self.in_bucket || len > self.uploaded()
    }

    /// Whether the bytes uploaded are still the file's (see [`verify`]). `Ok(Err(_))` says what
    /// differs.
    pub fn verify(&mut self) -> io::Result<std::result::Result<(), proof::Mismatch>> {
        if !self.in_bucket {
            return Ok(Ok(()));
        }
        self.witness.check(&self.file)
    }

    /// Uploads what the bucket lacks up to `len`: from 0 while the generation holds nothing of
    /// the file, else from the end of what it holds. Progress is kept object by object.
    /// `closes`: whether this upload is the last of the observation at `time_ms` (see
    /// [`Uploader::put_deltas`]); only such an upload merges, since a merged object is a point.
    pub fn ship(
        &mut self,
        s: &mut Session,
        generation: GenId,
        part: &str,
        len: u64,
        (time_ms, closes): (u64, bool),
    ) -> std::result::Result<(), UploadError> {
        self.ship_with(s, generation, part, len, (time_ms, closes), None)
            .map(|_| ())
    }

    /// [`Shipped::ship`] for a Redis incremental file whose `#TS` marks are points: each mark
    /// inside the upload (see [`crate::marks`]) that falls after `after_ms` and before
    /// `time_ms` is a point of its own, in a merged object of the new bytes (or of a merge).
    /// With no such mark, or a range too large to read at once, it is a plain upload.
    /// Returns the time of the first point marks made, if any.
    pub fn ship_marked(
        &mut self,
        s: &mut Session,
        generation: GenId,
        part: &str,
        len: u64,
        (time_ms, after_ms, closes): (u64, u64, bool),
    ) -> std::result::Result<Option<u64>, UploadError> {
        self.ship_with(s, generation, part, len, (time_ms, closes), Some(after_ms))
    }

    fn ship_with(
        &mut self,
        s: &mut Session,
        generation: GenId,
        part: &str,
        len: u64,
        (time_ms, closes): (u64, bool),
        after_ms: Option<u64>,
    ) -> std::result::Result<Option<u64>, UploadError> {
        s.up.check_lease()?;
        let start = self.uploaded();
        let marked = match after_ms {
            Some(after) if len > start && len - start <= BUFFER_LIMIT => Some(
                self.find_marks(part, (start, len), (after, time_ms))
                    .map_err(UploadError::Read)?,
            ),
            _ => None,
        };
        // The new bytes as read for the marks are the ones sent, whichever way they go.
        let (inner, fresh) = match &marked {
            Some(m) => (&m.inner[..], Some(&m.fresh[..])),
            None => (&[][..], None),
        };
        let merging = closes
            .then(|| self.merge_from(s, (start, len), time_ms))
            .flatten();
        // A merge with the objects compaction chose; failing that, or without one, a merged
        // object of the new bytes alone when marks make points inside them; failing both, a
        // plain delta.
        let own = (!inner.is_empty()).then_some(self.held.len());
        let mut tries = merging.into_iter().chain(own).peekable();
        while let Some(from) = tries.next() {
            let m = Merge {
                generation,
                part,
                file: &self.file,
                inputs: &self.held[from..],
                new: (start, len),
                time_ms,
                inner,
                fresh,
            };
            match s.up.put_merged(&m, &mut self.witness) {
                Ok(merged) => {
                    let first = inner.first().map(|&(_, t)| t);
                    if let Some(sc) = marked.and_then(|m| m.scanner) {
                        self.scanner = Some(sc);
                    }
                    let replaced = self.held.split_off(from);
                    s.doomed.add(
                        replaced
                            .iter()
                            .filter(|h| h.whole())
                            .map(|h| h.object.key(&s.up.root)),
                    );
                    self.held.push(merged);
                    self.in_bucket = true;
                    return Ok(first);
                }
                // Compaction never holds a backup back: this upload goes as a plain delta,
                // and the merge is tried again at the next window. Said at WARN when it will
                // fail again (a store refusing multipart copies, bytes that changed); a
                // network error is the polling loop's to report.
                Err(e) => {
                    let (why, again) = match e {
                        UploadError::LeaseLost(e) => return Err(UploadError::LeaseLost(e)),
                        UploadError::S3(e) => (e.to_string(), !e.is_transient()),
                        UploadError::Read(e) => (e.to_string(), true),
                    };
                    let level = match again {
                        true => log::Level::Warn,
                        false => log::Level::Info,
                    };
                    let instead = match tries.peek() {
                        Some(_) => "uploading the new bytes alone, with their #TS points",
                        None => "uploading a plain delta",
                    };
                    log::log!(
                        level,
                        "compaction of {part} in generation {}: {why}; {instead}",
                        generation.number
                    );
                }
            }
        }
        let r = s.up.put_deltas(
            generation,
            part,
            (&self.file, fresh),
            (start, len),
            (time_ms, closes),
            (&mut self.witness, &mut self.held),
        );
        // Part of a large range may be stored even if the rest failed.
        self.in_bucket |= r.is_ok() || self.uploaded() > 0;
        if r.is_ok() && closes {
            self.close_point(time_ms);
        }
        if let (Ok(()), Some(sc)) = (&r, marked.and_then(|m| m.scanner)) {
            self.scanner = Some(sc);
        }
        r.map(|()| None)
    }

    /// Reads `[start, end)` and the `#TS` marks in it: the scanner is first brought up to
    /// `start` from the file (from byte 0 the first time, or past ranges uploaded unread).
    /// No points when the file's framing was lost (said once at WARN: points only at each
    /// look).
    fn find_marks(
        &mut self,
        part: &str,
        (start, end): (u64, u64),
        (after_ms, time_ms): (u64, u64),
    ) -> io::Result<Marked> {
        let mut fresh = vec![0; (end - start) as usize];
        read_exact_at(&self.file, &mut fresh, start)?;
        let none = |fresh| Marked {
            fresh,
            inner: Vec::new(),
            scanner: None,
        };
        // Until a file shows a mark, it is not read for them: a Redis without
        // `aof-timestamp-enabled` costs one search of the new bytes.
        if self.scanner.is_none() && !fresh.windows(4).any(|w| w == b"#TS:") {
            return Ok(none(fresh));
        }
        let mut scanner = match self.scanner.take() {
            Some(sc) if sc.at <= start => sc,
            _ => Scanner::new(),
        };
        let mut buf = vec![0; (1 << 20).min(start - scanner.at) as usize];
        while scanner.at < start && !scanner.lost() {
            let n = buf.len().min((start - scanner.at) as usize);
            read_exact_at(&self.file, &mut buf[..n], scanner.at)?;
            scanner.feed(&buf[..n]);
        }
        let was_lost = scanner.lost();
        let mut after = scanner.clone();
        let found = after.feed(&fresh);
        if after.lost() && !was_lost {
            log::warn!(
                "{part} is not framed as Redis writes commands near byte {}: its #TS marks \
                 are no longer read, and its points are each look's only",
                after.at
            );
        }
        self.scanner = Some(scanner);
        if after.lost() {
            self.scanner = Some(after);
            return Ok(none(fresh));
        }
        let tail = after.last_second.filter(|_| after.at_boundary());
        let inner = marks::points(&found, tail, (start, end), after_ms, time_ms);
        Ok(Marked {
            fresh,
            inner,
            scanner: Some(after),
        })
    }

    /// The point at `time_ms` has closed (its closing object landed, in this part or another):
    /// the pieces this file holds of it are no longer open.
    pub fn close_point(&mut self, time_ms: u64) {
        for h in self.held.iter_mut().rev() {
            if h.last_ms != time_ms {
                break;
            }
            h.open = false;
        }
    }

    /// Uploads what the bucket lacks up to `len` of a file that is no longer the datastore's
    /// (replaced at its path, or left behind by a new generation), labelled with its
    /// modification time: it stopped being written then, and the generation's last point
    /// must not claim writes that went elsewhere. `marks_after`: as for
    /// [`Shipped::ship_marked`], for the file Redis was appending to.
    pub fn ship_detached(
        &mut self,
        s: &mut Session,
        generation: GenId,
        part: &str,
        len: u64,
        marks_after: Option<u64>,
    ) -> std::result::Result<(), UploadError> {
        let time = s.clock.at_least(mtime_ms(&self.file));
        self.ship_with(s, generation, part, len, (time, true), marks_after)
            .map(|_| ())
    }

    /// Starts over in a new generation: the bucket holds nothing of it there.
    pub fn restart(&mut self) {
        self.witness = Witness::empty();
        self.in_bucket = false;
        self.held.clear();
        self.scanner = None;
    }

    /// Where the upload of `[start, end)` at `time_ms` merges from, if it does (see
    /// [`compaction::merge_from`]): only after a plain start, for a range small enough to
    /// read at once, at a time after the newest held point.
    fn merge_from(&self, s: &Session, (start, end): (u64, u64), time_ms: u64) -> Option<usize> {
        let spans = s.compaction.as_ref()?;
        let last = self.held.last()?;
        if !self.in_bucket
            || last.end != start
            || end - start > BUFFER_LIMIT
            || time_ms <= last.last_ms
        {
            return None;
        }
        let firsts: Vec<u64> = self.held.iter().map(|h| h.first_ms).collect();
        let from = compaction::merge_from(&firsts, last.last_ms, time_ms, spans)?;
        // A sealed merge is made anew in memory (see `compaction/reseal.rs`): bounded like a
        // merge on a store that copies nothing, in stored bytes.
        let resealed = s.up.sealer.seal() != Seal::Plain
            || self.held[from..]
                .iter()
                .any(|h| h.object.seal != Seal::Plain);
        match s.up.store.copies_parts() && !resealed {
            true => Some(from),
            false => {
                let lens: Vec<u64> = self.held.iter().map(Held::stored_len).collect();
                compaction::merge_without_copies(&lens, from)
            }
        }
    }

    /// Bytes on disk not uploaded yet.
    pub fn pending(&self) -> u64 {
        self.file
            .metadata()
            .map(|m| m.len().saturating_sub(self.uploaded()))
            .unwrap_or(0)
    }
}

/// New bytes read for an upload (sent as read), the points their marks make, and the
/// scanner after them (kept once the upload lands; `None` when it was not read or lost).
struct Marked {
    fresh: Vec<u8>,
    inner: Vec<(u64, u64)>,
    scanner: Option<Scanner>,
}

/// Opens a path to follow without blocking, and refuses anything but a regular file or a
/// folder: opening a FIFO for reading would block until a writer came, deaf to SIGTERM, and a
/// device or socket is not a log. `Ok(None)`: nothing is there (yet).
pub fn open_followed(path: &Path) -> Result<Option<(File, std::fs::Metadata)>> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    const O_NONBLOCK: i32 = 0o4000;
    const O_NOCTTY: i32 = 0o400;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK | O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("cannot open", path, &e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| Error::io("cannot stat", path, &e))?;
    let t = meta.file_type();
    let what = if t.is_file() || t.is_dir() {
        return Ok(Some((file, meta)));
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a regular file"
    };
    Err(Error::new(
        Exit::Usage,
        format!(
            "{} is {what}: give the regular file the datastore appends to, or a Redis 7 \
             appendonlydir/ folder",
            path.display()
        ),
    ))
}
