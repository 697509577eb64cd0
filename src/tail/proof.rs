//! Whether the bytes persist already uploaded of a followed file are still the file's bytes.
//!
//! Comparing lengths is not enough: a file truncated and written again past its old length
//! between two polls (logrotate `copytruncate` on a busy log), or a preallocated file written in
//! place, keeps a length that looks like an append. So each tick, at a fixed cost whatever the
//! file's size, persist re-reads and compares:
//! - the first [`EDGE`] bytes and the last [`EDGE`] bytes of what was uploaded, with the bytes
//!   it sent (kept in memory as they were sent): this catches a rewrite at once;
//! - [`SCRUB_PER_TICK`] more bytes of a scrub that walks the uploaded prefix from offset 0 and,
//!   at its end, compares the CRC-32 of what it read with the CRC-32 of what was uploaded (known
//!   from the objects' CRCs, combined). A change anywhere is found within one pass: about
//!   `size / SCRUB_PER_TICK` ticks.
//!
//! What cannot be seen: a change undone before the scrub reaches it, or one that keeps the
//! head, the edge and the CRC-32 of the prefix identical.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Bytes kept, as sent, at the start of the file and at the end of what was uploaded.
pub const EDGE: u64 = 64;

/// Bytes of the uploaded prefix the scrub re-reads per tick (one pass over a 1 GiB file takes
/// 4096 ticks; a file up to this size is checked whole every tick). From the page cache this
/// costs tens of microseconds.
pub const SCRUB_PER_TICK: u64 = 256 << 10;

/// What persist knows of the prefix of a file it uploaded: its length and CRC-32, and its
/// first and last bytes as sent.
#[derive(Debug, Clone)]
pub struct Witness {
    len: u64,
    crc: u32,
    head: Vec<u8>,
    tail: Vec<u8>,
    scrub: Option<Scrub>,
    buf: Vec<u8>,
}

/// One pass of the scrub: the CRC-32 of `[0, pos)` read so far, to compare at `end`.
#[derive(Debug, Clone)]
struct Scrub {
    end: u64,
    crc: u32,
    pos: u64,
    hasher: crc32fast::Hasher,
}

/// The bytes of one range a [`Witness`] keeps, collected while the range is sent.
#[derive(Debug, Clone)]
pub struct Capture {
    start: u64,
    end: u64,
    head: Vec<u8>,
    tail_from: u64,
    tail: Vec<u8>,
}

impl Capture {
    pub fn new(start: u64, end: u64) -> Capture {
        Capture {
            start,
            end,
            head: Vec::new(),
            tail_from: end.saturating_sub(EDGE).max(start),
            tail: Vec::new(),
        }
    }

    /// Bytes `[pos, pos + buf.len())` of the range, fed in order.
    pub fn feed(&mut self, pos: u64, buf: &[u8]) {
        let end = pos + buf.len() as u64;
        if pos < EDGE {
            let upto = end.min(EDGE);
            self.head.extend_from_slice(&buf[..(upto - pos) as usize]);
        }
        if end > self.tail_from {
            let from = self.tail_from.max(pos);
            self.tail.extend_from_slice(&buf[(from - pos) as usize..]);
        }
    }
}

/// What a check found different.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch(pub String);

impl Witness {
    /// Nothing uploaded yet.
    pub fn empty() -> Witness {
        Witness {
            len: 0,
            crc: 0,
            head: Vec::new(),
            tail: Vec::new(),
            scrub: None,
            buf: Vec::new(),
        }
    }

    /// A prefix `[0, len)` the bucket holds with CRC-32 `crc`, which the caller has just found
    /// identical in `file`: its edges are read from the file.
    pub fn resumed(file: &File, len: u64, crc: u32) -> io::Result<Witness> {
        let mut head = vec![0; len.min(EDGE) as usize];
        file.read_exact_at(&mut head, 0)?;
        let mut tail = vec![0; len.min(EDGE) as usize];
        let tail_at = len - tail.len() as u64;
        file.read_exact_at(&mut tail, tail_at)?;
        Ok(Witness {
            len,
            crc,
            head,
            tail,
            scrub: None,
            buf: Vec::new(),
        })
    }

    /// Length of the uploaded prefix.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Records that the range of `cap`, with CRC-32 `crc`, is now uploaded after the prefix.
    pub fn extend(&mut self, cap: Capture, crc: u32) {
        debug_assert_eq!(cap.start, self.len, "uploads are contiguous");
        if cap.start != self.len {
            // Not reachable: uploads continue the prefix. Keep nothing we cannot vouch for.
            *self = Witness::empty();
            return;
        }
        let mut h = crc32fast::Hasher::new_with_initial_len(self.crc, self.len);
        h.combine(&crc32fast::Hasher::new_with_initial_len(
            crc,
            cap.end - cap.start,
        ));
        self.crc = h.finalize();
        self.len = cap.end;
        self.head.extend_from_slice(&cap.head);
        self.head.truncate(EDGE as usize);
        if cap.tail_from > cap.start {
            self.tail = cap.tail;
        } else {
            self.tail.extend_from_slice(&cap.tail);
            let cut = self.tail.len().saturating_sub(EDGE as usize);
            self.tail.drain(..cut);
        }
    }

    /// Compares the file with what was uploaded of it, reading at most `2 * EDGE +
    /// SCRUB_PER_TICK` bytes. `Ok(Err(_))` says what differs; `Err` is a read error.
    pub fn check(&mut self, file: &File) -> io::Result<Result<(), Mismatch>> {
        let edges = [
            (0, self.head.clone(), "the start of the file"),
            (
                self.len - self.tail.len() as u64,
                self.tail.clone(),
                "the end of what was uploaded",
            ),
        ];
        for (at, want, what) in edges {
            let mut got = vec![0; want.len()];
            match read_at(file, &mut got, at)? {
                true if got == want => {}
                true => {
                    return Ok(Err(Mismatch(format!(
                        "bytes {at}..{} ({what}) differ from the bytes uploaded",
                        at + want.len() as u64
                    ))));
                }
                false => return Ok(Err(self.shorter())),
            }
        }
        self.scrub_step(file)
    }

    fn shorter(&self) -> Mismatch {
        Mismatch(format!(
            "the file is shorter than the {} bytes uploaded",
            self.len
        ))
    }

    fn scrub_step(&mut self, file: &File) -> io::Result<Result<(), Mismatch>> {
        let s = self.scrub.get_or_insert_with(|| Scrub {
            end: self.len,
            crc: self.crc,
            pos: 0,
            hasher: crc32fast::Hasher::new(),
        });
        let n = (s.end - s.pos).min(SCRUB_PER_TICK) as usize;
        self.buf.resize(n, 0);
        let (end, crc, pos) = (s.end, s.crc, s.pos);
        if !read_at(file, &mut self.buf[..n], pos)? {
            self.scrub = None;
            return Ok(Err(self.shorter()));
        }
        let Some(s) = self.scrub.as_mut() else {
            return Ok(Ok(()));
        };
        s.hasher.update(&self.buf[..n]);
        s.pos += n as u64;
        if s.pos < end {
            return Ok(Ok(()));
        }
        let found = s.hasher.clone().finalize();
        // The next tick starts a new pass over whatever has been uploaded by then.
        self.scrub = None;
        if self.buf.capacity() > SCRUB_PER_TICK as usize {
            self.buf = Vec::new();
        }
        Ok(if found == crc {
            Ok(())
        } else {
            Err(Mismatch(format!(
                "the CRC-32 of bytes 0..{end} is {found:08x}, the bytes uploaded have {crc:08x}"
            )))
        })
    }
}

/// Reads exactly `buf.len()` bytes at `at`; `Ok(false)` if the file ends first.
fn read_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<bool> {
    match file.read_exact_at(buf, at) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    struct Tmp(std::path::PathBuf, File);

    impl Tmp {
        fn new(name: &str, content: &[u8]) -> Tmp {
            let p =
                std::env::temp_dir().join(format!("petrify-verify-{name}-{}", std::process::id()));
            std::fs::write(&p, content).unwrap();
            let f = File::open(&p).unwrap();
            Tmp(p, f)
        }
        fn write_at(&self, at: u64, bytes: &[u8]) {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&self.0)
                .unwrap();
            f.write_all_at(bytes, at).unwrap();
        }
        fn append(&self, bytes: &[u8]) {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&self.0)
                .unwrap();
            f.write_all(bytes).unwrap();
        }
    }

    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// Uploads `[w.len(), end)` of `data` into the witness, in pieces as a streaming reader
    /// would feed it.
    fn upload(w: &mut Witness, data: &[u8], end: usize) {
        let start = w.len() as usize;
        let mut cap = Capture::new(start as u64, end as u64);
        for (i, piece) in data[start..end].chunks(7).enumerate() {
            cap.feed((start + i * 7) as u64, piece);
        }
        w.extend(cap, crc32fast::hash(&data[start..end]));
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn appends_pass_and_edges_follow_the_uploads() {
        let d = data(1000);
        let t = Tmp::new("ok", &d[..300]);
        let mut w = Witness::empty();
        for end in [0, 5, 70, 71, 300] {
            upload(&mut w, &d, end);
            assert_eq!(w.check(&t.1).unwrap(), Ok(()), "after {end}");
        }
        assert_eq!((w.len, w.crc), (300, crc32fast::hash(&d[..300])));
        assert_eq!(w.head, &d[..64]);
        assert_eq!(w.tail, &d[236..300]);
        t.append(&d[300..]); // growth is not a change
        assert_eq!(w.check(&t.1).unwrap(), Ok(()));
        let r = Witness::resumed(&t.1, 300, w.crc).unwrap();
        assert_eq!((r.head, r.tail), (w.head.clone(), w.tail.clone()));
    }

    #[test]
    fn a_rewrite_at_either_edge_is_seen_at_once() {
        let d = data(5000);
        for (at, what) in [(3, "start of the file"), (4990, "end of what was uploaded")] {
            let t = Tmp::new("edge", &d);
            let mut w = Witness::empty();
            upload(&mut w, &d, 5000);
            t.write_at(at, b"X");
            let m = w.check(&t.1).unwrap().unwrap_err();
            assert!(m.0.contains(what), "{m:?}");
        }
    }

    #[test]
    fn a_change_in_the_middle_is_found_by_the_scrub_within_one_pass() {
        let size = 3 * SCRUB_PER_TICK as usize + 1000;
        let d = data(size);
        let t = Tmp::new("mid", &d);
        let mut w = Witness::empty();
        upload(&mut w, &d, size);
        // One clean pass, then a change the edges cannot see.
        for _ in 0..4 {
            assert_eq!(w.check(&t.1).unwrap(), Ok(()));
        }
        t.write_at(SCRUB_PER_TICK * 2 + 17, b"\xff\xfe");
        let found = (0..4).find_map(|_| w.check(&t.1).unwrap().err());
        assert!(found.unwrap().0.contains("CRC-32 of bytes 0.."));
    }

    #[test]
    fn a_truncation_is_a_mismatch_not_an_error() {
        let d = data(200);
        let t = Tmp::new("short", &d);
        let mut w = Witness::empty();
        upload(&mut w, &d, 200);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&t.0)
            .unwrap()
            .set_len(100)
            .unwrap();
        let m = w.check(&t.1).unwrap().unwrap_err();
        assert!(m.0.contains("shorter"), "{m:?}");
    }
}
