//! `#TS:<unix seconds>` marks in a Redis 7 / Valkey incremental AOF file, and the recovery
//! points they make. Pure: bytes in, marks and points out.
//!
//! With `aof-timestamp-enabled yes`, Redis writes the line `#TS:<unix>\r\n` before the first
//! command of each new second (by its own clock). Everything before a mark `#TS:M` was written
//! before second M began; so the file cut just before the mark is exactly the dataset as it
//! stood from the end of the last second that had a write (the mark before, P) until M began.
//! Such a cut is a recovery point persist can offer without having looked at that moment:
//! it is labelled `P*1000 + 999` ms (the earliest moment it is exact; `M*1000 - 1` when no
//! earlier mark is known), so that `recover --at-timestamp T` holds every write of the seconds
//! before T's. The end of an upload is such a point too, labelled by the last mark before it.
//!
//! A mark counts only at a command boundary: the scanner follows the RESP framing of the
//! whole file (`*N`, then N `$LEN` bulk strings), so a value that happens to hold
//! `\r\n#TS:...` is never taken for one, and a mark inside `MULTI`...`EXEC` is not a point
//! (a cut there would end the file inside a transaction). Anything the scanner cannot frame
//! stops it for good: no more points from marks in that file, never a cut mid-command.

/// A mark at a command boundary: the offset of its `#` and the second it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub offset: u64,
    pub second: u64,
}

/// Longest line the scanner accepts: a mark, a count or a bulk length is a few bytes; a long
/// annotation is not a mark and only skipped.
const MAX_LINE: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Between commands.
    Boundary,
    /// Inside a `#` line that began at `start` (its first `MAX_LINE` bytes kept).
    Annotation { start: u64, line: Vec<u8> },
    /// Inside `*N\r\n`.
    Count(Vec<u8>),
    /// Before the `$` of an argument, `args` arguments left after this one.
    Dollar { args: u64 },
    /// Inside the digits of `$LEN\r\n`.
    BulkLen { line: Vec<u8>, args: u64 },
    /// Inside a bulk string: `left` bytes, then `\r\n`, then `args` more.
    Bulk { left: u64, args: u64, crlf: u8 },
    /// Framing lost: nothing more is read.
    Lost,
}

/// Follows one incremental file from byte 0, fed in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanner {
    /// The offset of the next byte to feed.
    pub at: u64,
    state: State,
    /// The newest mark seen, at any boundary.
    pub last_second: Option<u64>,
    /// Inside MULTI...EXEC.
    in_multi: bool,
    /// Whether the command being read is the first argument (its name still to come), and
    /// that name's first bytes.
    naming: bool,
    name: Vec<u8>,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner::new()
    }
}

impl Scanner {
    pub fn new() -> Scanner {
        Scanner {
            at: 0,
            state: State::Boundary,
            last_second: None,
            in_multi: false,
            naming: false,
            name: Vec::new(),
        }
    }

    /// Whether framing was lost (the file is not RESP as Redis writes it).
    pub fn lost(&self) -> bool {
        self.state == State::Lost
    }

    /// Whether the bytes fed so far end between two commands, outside a transaction: a cut
    /// there loads whole.
    pub fn at_boundary(&self) -> bool {
        self.state == State::Boundary && !self.in_multi
    }

    /// Reads `bytes`, which follow byte `self.at` of the file; returns the marks that start at
    /// a command boundary outside a transaction, with the newest mark before each (`None`
    /// when the scanner saw none).
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<(Mark, Option<u64>)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let off = self.at + i as u64;
            let b = bytes[i];
            match &mut self.state {
                State::Lost => break,
                State::Boundary => {
                    self.state = match b {
                        b'#' => State::Annotation {
                            start: off,
                            line: vec![b],
                        },
                        b'*' => State::Count(Vec::new()),
                        _ => State::Lost,
                    };
                }
                State::Annotation { start, line } => {
                    if line.len() < MAX_LINE {
                        line.push(b);
                    }
                    if b == b'\n' {
                        let start = *start;
                        if let Some(second) = mark_second(line) {
                            if !self.in_multi {
                                out.push((
                                    Mark {
                                        offset: start,
                                        second,
                                    },
                                    self.last_second,
                                ));
                            }
                            self.last_second = Some(second);
                        }
                        self.state = State::Boundary;
                    }
                }
                State::Count(line) => match line_number(line, b) {
                    Line::More => {}
                    Line::Bad => self.state = State::Lost,
                    Line::Done(0) => self.state = State::Boundary,
                    Line::Done(n) => {
                        self.naming = true;
                        self.name.clear();
                        self.state = State::Dollar { args: n - 1 };
                    }
                },
                State::Dollar { args } => {
                    self.state = match b {
                        b'$' => State::BulkLen {
                            line: Vec::new(),
                            args: *args,
                        },
                        _ => State::Lost,
                    };
                }
                State::BulkLen { line, args } => match line_number(line, b) {
                    Line::More => {}
                    Line::Bad => self.state = State::Lost,
                    Line::Done(len) => {
                        self.state = State::Bulk {
                            left: len,
                            args: *args,
                            crlf: 0,
                        }
                    }
                },
                State::Bulk { left, args, crlf } => {
                    if *left > 0 {
                        // Whole runs of a value at once: values are most of the bytes.
                        let take = (*left).min((bytes.len() - i) as u64) as usize;
                        if self.naming && self.name.len() < 8 {
                            let keep = take.min(8 - self.name.len());
                            self.name.extend_from_slice(&bytes[i..i + keep]);
                        }
                        *left -= take as u64;
                        i += take;
                        continue;
                    }
                    let want = if *crlf == 0 { b'\r' } else { b'\n' };
                    if b != want {
                        self.state = State::Lost;
                    } else if *crlf == 0 {
                        *crlf = 1;
                    } else {
                        let args = *args;
                        if self.naming {
                            self.naming = false;
                            if self.name.eq_ignore_ascii_case(b"multi") {
                                self.in_multi = true;
                            } else if self.name.eq_ignore_ascii_case(b"exec") {
                                self.in_multi = false;
                            }
                        }
                        self.state = match args {
                            0 => State::Boundary,
                            _ => State::Dollar { args: args - 1 },
                        };
                    }
                }
            }
            i += 1;
        }
        self.at += bytes.len() as u64;
        out
    }
}

enum Line {
    More,
    Bad,
    Done(u64),
}

/// One more byte of a `<digits>\r\n` line whose digits so far are `line`.
fn line_number(line: &mut Vec<u8>, b: u8) -> Line {
    match b {
        b'0'..=b'9' if line.len() < 20 && !line.ends_with(b"\r") => {
            line.push(b);
            Line::More
        }
        b'\r' if !line.is_empty() && !line.ends_with(b"\r") => {
            line.push(b);
            Line::More
        }
        b'\n' if line.ends_with(b"\r") => {
            let digits = &line[..line.len() - 1];
            match std::str::from_utf8(digits)
                .ok()
                .and_then(|s| s.parse().ok())
            {
                Some(n) => Line::Done(n),
                None => Line::Bad,
            }
        }
        _ => Line::Bad,
    }
}

/// The second a whole annotation line names, if it is a mark: `#TS:<digits>\r\n`.
fn mark_second(line: &[u8]) -> Option<u64> {
    let digits = line.strip_prefix(b"#TS:")?.strip_suffix(b"\r\n")?;
    if digits.is_empty() || digits.len() > 12 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The recovery points marks make inside the upload of `[start, end)` observed at `time_ms`,
/// after the generation's newest point at `after_ms`: `(end offset, time)` pairs in order,
/// each strictly after `after_ms` and the one before, strictly before `time_ms`, and ending
/// strictly inside the range (a cut at its start is the point before). `tail` is the newest
/// mark at `end` (the scanner's after reading the range): the range's end is a point from
/// the end of that second, when that falls inside the window. Pure.
pub fn points(
    marks: &[(Mark, Option<u64>)],
    tail: Option<u64>,
    (start, end): (u64, u64),
    after_ms: u64,
    time_ms: u64,
) -> Vec<(u64, u64)> {
    let label = |m: &Mark, before: Option<u64>| match before {
        Some(p) if p < m.second => p.saturating_mul(1000).saturating_add(999),
        _ => m.second.saturating_mul(1000).saturating_sub(1),
    };
    let mut out: Vec<(u64, u64)> = Vec::new();
    let cuts = marks
        .iter()
        .filter(|(m, _)| m.offset > start && m.offset < end)
        .map(|(m, before)| (m.offset, label(m, *before)));
    let last = tail.map(|s| (end, s.saturating_mul(1000).saturating_add(999)));
    for (offset, t) in cuts.chain(last) {
        let floor = out.last().map_or(after_ms, |&(_, t)| t);
        if t > floor && t < time_ms {
            out.push((offset, t));
        }
    }
    out
}

#[cfg(test)]
mod tests;
