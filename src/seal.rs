//! Sealed objects: how persist stores a body compressed (zstd frames), encrypted (age files to
//! X25519 recipients) or both, and how readers open it again. Owns the formats and the errors
//! that tell a missing or wrong identity from damage in the bucket; no S3, no files.
//!
//! The unit of sealing is one recovery point's own bytes (a delta, or one line of a merged
//! object's index): each is compressed as one zstd frame and then, when encrypting, made one age
//! file with a fresh file key. A merged object is its points' units back to back, so a point is
//! still a prefix of it (one ranged GET) and opens without any point before it, and a delta is
//! a whole file for `zstd -d` or `age -d`. What the key shows stays plain: range, time and
//! CRC-32 of the plaintext (see [`crate::layout`]).

use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::path::Path;
use std::str::FromStr;

use crate::layout::Seal;

/// zstd's level unless `--compress zstd:LEVEL` says otherwise (bench/NOTEBOOK.md: 4x on JSON
/// values at 124 MB/s, under 1 % of a core at 1 MiB/s of writes).
pub const DEFAULT_LEVEL: i32 = 3;

/// How persist seals what it uploads: `--compress` and `--encrypt-to`.
#[derive(Clone, Default)]
pub struct Sealer {
    /// zstd's level, or `None`: not compressed.
    pub level: Option<i32>,
    /// Encrypted to these, or to nobody: not encrypted.
    pub recipients: Vec<age::x25519::Recipient>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Sealer {{ level: {:?}, recipients: {} }}",
            self.level,
            self.recipients.len()
        )
    }
}

impl PartialEq for Sealer {
    fn eq(&self, other: &Sealer) -> bool {
        let keys = |s: &Sealer| {
            s.recipients
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
        };
        self.level == other.level && keys(self) == keys(other)
    }
}

impl Eq for Sealer {}

impl Sealer {
    /// What objects this sealer makes are.
    pub fn seal(&self) -> Seal {
        Seal::new(self.level.is_some(), !self.recipients.is_empty())
    }

    /// `plain` sealed as one unit (borrowed back when nothing is to be done).
    pub fn seal_unit<'a>(&self, plain: &'a [u8]) -> io::Result<Cow<'a, [u8]>> {
        let body: Cow<'a, [u8]> = match self.level {
            Some(level) => Cow::Owned(zstd::bulk::compress(plain, level)?),
            None => Cow::Borrowed(plain),
        };
        if self.recipients.is_empty() {
            return Ok(body);
        }
        let to = self.recipients.iter().map(|r| r as &dyn age::Recipient);
        let encryptor = age::Encryptor::with_recipients(to).map_err(io::Error::other)?;
        let mut out = Vec::with_capacity(body.len() + 200 + 16 * (body.len() >> 16));
        let mut w = encryptor.wrap_output(&mut out)?;
        w.write_all(&body)?;
        w.finish()?;
        Ok(Cow::Owned(out))
    }
}

/// `--compress`: `off`, `zstd` or `zstd:LEVEL` (1 to 19). The words of an error say what to give.
pub fn parse_compress(s: &str) -> Result<Option<i32>, String> {
    let bad = || format!("--compress {s:?}: give off, zstd or zstd:LEVEL (LEVEL 1 to 19)");
    match s.split_once(':') {
        None if s == "off" => Ok(None),
        None if s == "zstd" => Ok(Some(DEFAULT_LEVEL)),
        Some(("zstd", level)) => match level.parse::<i32>() {
            Ok(l) if (1..=19).contains(&l) => Ok(Some(l)),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// One `--encrypt-to` recipient (`age1...`).
pub fn parse_recipient(s: &str) -> Result<age::x25519::Recipient, String> {
    age::x25519::Recipient::from_str(s.trim()).map_err(|_| {
        format!(
            "--encrypt-to {s:?} is not an age X25519 recipient (age1..., as `age-keygen -y` \
             prints)"
        )
    })
}

/// A recipients file (`--encrypt-to-file`): one `age1...` a line, `#` comments and blank
/// lines ignored, as `age -R` reads.
pub fn read_recipients(path: &Path) -> Result<Vec<age::x25519::Recipient>, String> {
    key_file(path, "recipients file", "recipient (age1...)")
}

/// The keys in `path`, a `what` holding one `T` a line (`kind` names it in an error), `#`
/// comments and blank lines ignored, as age's own tools read them. An error names the line,
/// never its text (it may be a secret), and a file with no key is an error.
fn key_file<T: FromStr>(path: &Path, what: &str, kind: &str) -> Result<Vec<T>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let k = T::from_str(line).map_err(|_| {
            format!(
                "line {} of {what} {} is not an age X25519 {kind}",
                n + 1,
                path.display()
            )
        })?;
        out.push(k);
    }
    if out.is_empty() {
        return Err(format!("{what} {} holds no {kind}", path.display()));
    }
    Ok(out)
}

/// The private keys readers open encrypted objects with (`--identity FILE`).
pub struct Identities {
    keys: Vec<age::x25519::Identity>,
    file: String,
}

impl Identities {
    /// Identities from keys at hand (tests).
    #[cfg(test)]
    pub fn of(keys: Vec<age::x25519::Identity>) -> Identities {
        Identities {
            keys,
            file: "the test key".into(),
        }
    }

    /// [`Identities::read`], its failure an error with a status: an identity file that does
    /// not exist (66), cannot be read (74, 77) or holds no identity (64).
    pub fn load(path: &Path) -> crate::error::Result<Identities> {
        use crate::error::{Error, Exit};
        match std::fs::metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::new(
                    Exit::NoInput,
                    format!("identity file {} does not exist", path.display()),
                ));
            }
            Err(e) => return Err(Error::io("cannot read identity file", path, &e)),
            Ok(_) => {}
        }
        Identities::read(path).map_err(|why| Error::new(Exit::Usage, why))
    }

    /// An age identity file: `AGE-SECRET-KEY-1...` lines, `#` comments and blank lines
    /// ignored (what `age-keygen -o` writes). An error names the line, never its text.
    pub fn read(path: &Path) -> Result<Identities, String> {
        Ok(Identities {
            keys: key_file(
                path,
                "identity file",
                "identity (AGE-SECRET-KEY-1..., as `age-keygen` writes)",
            )?,
            file: path.display().to_string(),
        })
    }
}

/// Whether `identities` open the age file whose first bytes are `head` (its header, for
/// `status --identity`: the file key is unwrapped and the header's MAC checked, no payload read).
pub fn opens(head: &[u8], identities: &Identities) -> Result<(), OpenError> {
    let d = age::Decryptor::new(head).map_err(|e| match e {
        age::DecryptError::Io(_) => OpenError::Read("the header is longer than was read".into()),
        e => OpenError::Damaged(format!("its age header does not parse: {e}")),
    })?;
    match d.decrypt(identities.keys.iter().map(|k| k as &dyn age::Identity)) {
        Ok(_) => Ok(()),
        Err(age::DecryptError::NoMatchingKeys) => {
            Err(OpenError::WrongIdentity(identities.file.clone()))
        }
        Err(e) => Err(OpenError::Damaged(format!("it does not decrypt: {e}"))),
    }
}

/// Why sealed bytes did not open.
#[derive(Debug)]
pub enum OpenError {
    /// Encrypted, and no `--identity` was given.
    NoIdentity,
    /// None of the identities opens it (encrypted to other recipients).
    WrongIdentity(String),
    /// It does not decrypt or decompress, or holds other than what its key says: damage in
    /// the bucket.
    Damaged(String),
    /// Reading the body failed or it ended early: the store or the network, worth another try.
    Read(String),
    /// Writing what was opened failed.
    Write(io::Error),
}

/// A body being read, remembering whether the reading itself failed or ran short (as opposed
/// to what it held not opening).
struct Watched<'a> {
    inner: &'a mut dyn Read,
    left: u64,
    failed: Option<String>,
}

impl Read for Watched<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.left) as usize;
        match self.inner.read(&mut buf[..want]) {
            Ok(0) => {
                self.failed = Some(format!("the body ended {} bytes early", self.left));
                Err(io::Error::from(io::ErrorKind::UnexpectedEof))
            }
            Ok(n) => {
                self.left -= n as u64;
                Ok(n)
            }
            Err(e) => {
                self.failed = Some(format!("reading the body: {e}"));
                Err(e)
            }
        }
    }
}

/// Opens `units` (stored lengths, in order) of `seal` read from `body`, and hands what they
/// hold to `sink`, `expected` bytes in all. `units` empty: the whole body is one run of zstd
/// frames (a compressed object whose index could not be read; never an encrypted one).
pub fn open(
    body: &mut dyn Read,
    seal: Seal,
    (units, stored): (&[u64], u64),
    (identities, expected): (Option<&Identities>, u64),
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> Result<(), OpenError> {
    let whole = [stored];
    let units = match units.is_empty() {
        true => &whole[..],
        false => units,
    };
    if seal.encrypted() && identities.is_none() {
        return Err(OpenError::NoIdentity);
    }
    let mut given = 0u64;
    let mut buf = vec![0u8; 256 << 10];
    for &len in units {
        let mut w = Watched {
            inner: &mut *body,
            left: len,
            failed: None,
        };
        let (mut over, mut unwritten) = (false, None);
        let r = open_unit(&mut w, seal, identities, &mut buf, &mut |b: &[u8]| {
            given += b.len() as u64;
            if given > expected {
                over = true;
                return Err(io::Error::other("more than expected"));
            }
            sink(b).map_err(|e| {
                let kind = e.kind();
                unwritten = Some(e);
                io::Error::from(kind)
            })
        });
        if let Some(why) = w.failed {
            return Err(OpenError::Read(why));
        }
        if over {
            return Err(OpenError::Damaged(format!(
                "it opens to more than the {expected} bytes its key or index says"
            )));
        }
        if let Some(e) = unwritten {
            return Err(OpenError::Write(e));
        }
        r?;
        if w.left > 0 {
            return Err(OpenError::Damaged(
                "it holds bytes after its sealed data ends".into(),
            ));
        }
    }
    if given != expected {
        return Err(OpenError::Damaged(format!(
            "it opens to {given} bytes, its key or index says {expected}"
        )));
    }
    Ok(())
}

/// One unit: an age file (of zstd frames, or of the plaintext) or zstd frames.
fn open_unit(
    body: &mut dyn Read,
    seal: Seal,
    identities: Option<&Identities>,
    buf: &mut [u8],
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> Result<(), OpenError> {
    let damaged = |what: &str, e: &dyn std::fmt::Display| {
        OpenError::Damaged(format!("it does not {what}: {e}"))
    };
    let decrypted: Box<dyn Read + '_> = match (seal.encrypted(), identities) {
        (false, _) => Box::new(body),
        (true, None) => return Err(OpenError::NoIdentity),
        (true, Some(ids)) => {
            let d = age::Decryptor::new(body).map_err(|e| damaged("decrypt", &e))?;
            let keys = ids.keys.iter().map(|k| k as &dyn age::Identity);
            match d.decrypt(keys) {
                Ok(r) => Box::new(r),
                Err(age::DecryptError::NoMatchingKeys) => {
                    return Err(OpenError::WrongIdentity(ids.file.clone()));
                }
                Err(e) => return Err(damaged("decrypt", &e)),
            }
        }
    };
    let mut plain: Box<dyn Read + '_> = match seal.compressed() {
        true => Box::new(
            zstd::stream::read::Decoder::new(decrypted).map_err(|e| damaged("decompress", &e))?,
        ),
        false => decrypted,
    };
    let what = match seal.compressed() {
        true => "decompress",
        false => "decrypt",
    };
    loop {
        let n = match plain.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) => return Err(damaged(what, &e)),
        };
        // The caller's own error is kept by `open`; this one only stops the unit.
        if sink(&buf[..n]).is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests;
