//! The object layout: how a key names a generation, a part, a byte range, the time the range was
//! observed and its CRC-32. Pure string work, no I/O.
//!
//! Layout version 1 (stable; any change gets a new `petrify-vN` segment, never a migration):
//!
//! ```text
//! <prefix>/petrify-v1/<generation>-<mode>/<part>/<start>-<end>.<time>.<crc>.<kind>
//! ```
//!
//! * `generation`: 10 decimal digits. A generation is one continuous history of the source; a new
//!   one starts when the file is replaced, truncated, or no longer matches what was uploaded.
//!   Generations never share objects, so deleting a whole generation never breaks another.
//! * `mode`: `file` (one append-only file) or `aofdir` (a Redis 7 / Valkey multi-part AOF folder).
//! * `part`: the file inside the generation. In `file` mode always `file`; in `aofdir` mode the
//!   name Redis gave the file (`appendonly.aof.1.incr.aof`, `appendonly.aof.manifest`). Only
//!   `[A-Za-z0-9._-]`, so that no store mangles it and no name can escape a folder.
//! * `start`, `end`: 20 decimal digits each, the byte range `[start, end)` of the part.
//! * `time`: 13 decimal digits, Unix milliseconds at which the part was observed to hold these
//!   bytes. Strictly increasing within a prefix while one `persist` runs.
//! * `crc`: 8 lowercase hex digits, CRC-32 (IEEE) of the object's bytes.
//! * `kind`: `delta` (bytes `[start, end)` appended to the part), `snap` (the whole part,
//!   `start` is 0; used for the Redis manifest, which is rewritten rather than appended to), or
//!   `merged` (compaction, or a Redis upload with `#TS` marks inside it, see [`index`] and
//!   [`crate::marks`]): bytes `[start, end)` that several recovery points were observed in,
//!   followed in the same object by a plain-text index of those points. `time` is then the
//!   last point's, `crc` that of the bytes `[start, end)` without the index, and the
//!   object is longer than `end - start`. An older petrify does not know `merged`, ignores it
//!   with a WARN and reports the bytes it holds as missing: it never reads them wrongly, which is
//!   why the layout stays `petrify-v1`.
//! * `kind` `piece`: bytes `[start, end)` appended to the part, like a delta, but not a recovery
//!   point of its own. One observation (a range over the largest object size, or a Redis tick
//!   that uploads several files) can need several objects; all but the last one uploaded are
//!   pieces, and the last (a delta, a merged object or a manifest snapshot) closes the point.
//!   Readers offer a point only at a time some closing object carries, so a point is listed
//!   only once all of it has landed; a piece whose point never closed (persist died, the store
//!   refused the rest) still serves the chains of later points, which resume after it. An older
//!   petrify ignores pieces (unknown kind, with a WARN) and reports their bytes as missing:
//!   never wrong bytes.
//!
//! * sealed objects (see [`crate::seal`]) carry two more segments after `kind`:
//!   `.<stored>.<seal>`, `stored` the length in 20 decimal digits of the body as stored (before
//!   a merged object's index), `seal` how it is stored: `zst` (zstd frames), `age` (age files
//!   to X25519 recipients) or `zst.age` (zstd frames, then encrypted). `start`, `end` and `crc`
//!   stay the plaintext's, so that the chain check is the same for every object, and plain and
//!   sealed objects mix in one generation. The name ends like a file `zstd -d` and `age -d`
//!   take. An older petrify finds six or seven segments, ignores the key with a WARN and reports
//!   its bytes as missing: never wrong bytes.
//!
//! Fixed widths make the store's lexical order equal chain order, but readers sort for themselves.
//!
//! One more key, `<generation>-<mode>/dropping` (empty), marks a generation that retention is
//! deleting: readers pass over it as if it were gone already, so that a prune cut short leaves no
//! half-deleted history on show; the next prune finishes it. Older readers ignore the key (not one
//! of theirs).

use std::fmt;
use std::sync::Arc;

pub mod index;

/// The path segment that carries the layout version.
pub const LAYOUT_DIR: &str = "petrify-v1";

/// What a generation follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// One append-only file.
    File,
    /// A Redis 7 / Valkey `appendonlydir/`: a manifest plus the files it lists.
    AofDir,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::File => "file",
            Mode::AofDir => "aofdir",
        }
    }

    fn parse(s: &str) -> Option<Mode> {
        match s {
            "file" => Some(Mode::File),
            "aofdir" => Some(Mode::AofDir),
            _ => None,
        }
    }
}

/// The name of the only part of a `file` mode generation.
pub const FILE_PART: &str = "file";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Delta,
    Snap,
    Merged,
    /// Appended bytes of a point that another object closes (see the module doc).
    Piece,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Delta => "delta",
            Kind::Snap => "snap",
            Kind::Merged => "merged",
            Kind::Piece => "piece",
        }
    }

    /// Whether an object of this kind makes a recovery point at its time.
    pub fn closes(self) -> bool {
        self != Kind::Piece
    }
}

/// How an object's body is stored (see [`crate::seal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Seal {
    /// The plaintext bytes.
    #[default]
    Plain,
    /// zstd frames.
    Zstd,
    /// age files (X25519 recipients) of the plaintext.
    Age,
    /// age files of zstd frames.
    ZstdAge,
}

impl Seal {
    pub fn new(compressed: bool, encrypted: bool) -> Seal {
        match (compressed, encrypted) {
            (false, false) => Seal::Plain,
            (true, false) => Seal::Zstd,
            (false, true) => Seal::Age,
            (true, true) => Seal::ZstdAge,
        }
    }

    pub fn compressed(self) -> bool {
        matches!(self, Seal::Zstd | Seal::ZstdAge)
    }

    pub fn encrypted(self) -> bool {
        matches!(self, Seal::Age | Seal::ZstdAge)
    }

    /// The key's last segments (empty for plain objects).
    pub fn suffix(self) -> &'static str {
        match self {
            Seal::Plain => "",
            Seal::Zstd => "zst",
            Seal::Age => "age",
            Seal::ZstdAge => "zst.age",
        }
    }

    fn parse(s: &str) -> Option<Seal> {
        match s {
            "zst" => Some(Seal::Zstd),
            "age" => Some(Seal::Age),
            "zst.age" => Some(Seal::ZstdAge),
            _ => None,
        }
    }
}

/// Everything one object's key says about it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub generation: u64,
    pub mode: Mode,
    pub part: String,
    pub start: u64,
    pub end: u64,
    pub time_ms: u64,
    pub crc: u32,
    pub kind: Kind,
    /// How the body is stored.
    pub seal: Seal,
    /// Where these bytes are in the object that holds them, as stored: `(0, stored length)`
    /// for a whole object (`(0, len)` when plain), a point's own stored bytes inside a merged
    /// object (from its index).
    pub stored: (u64, u64),
    /// For one recovery point's bytes inside a `merged` object (read from its index): that
    /// object. `start`, `end`, `time_ms` and `crc` are then the point's own (its bytes since the
    /// point before), and [`ObjectKey::key`] names the merged object, the only one there is.
    pub within: Option<Arc<ObjectKey>>,
}

impl ObjectKey {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// The length of these bytes as stored.
    pub fn stored_len(&self) -> u64 {
        self.stored.1 - self.stored.0
    }

    /// The object that holds these bytes: the merged object for a point read from an index,
    /// this one otherwise.
    pub fn holder(&self) -> &ObjectKey {
        match &self.within {
            Some(m) => m,
            None => self,
        }
    }

    /// The key under `root` (see [`root`]) of the object holding these bytes (see
    /// [`ObjectKey::holder`]).
    pub fn key(&self, root: &str) -> String {
        if let Some(m) = &self.within {
            return m.key(root);
        }
        let name = format!(
            "{root}{}/{}/{:020}-{:020}.{:013}.{:08x}.{}",
            generation_dir(self.generation, self.mode),
            self.part,
            self.start,
            self.end,
            self.time_ms,
            self.crc,
            self.kind.as_str()
        );
        match self.seal {
            Seal::Plain => name,
            seal => format!("{name}.{:020}.{}", self.stored.1, seal.suffix()),
        }
    }
}

impl fmt::Display for ObjectKey {
    /// Short form for messages: the key below the root.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key(""))
    }
}

/// `0000000007-file`: the folder of one generation, below the root.
pub fn generation_dir(generation: u64, mode: Mode) -> String {
    format!("{generation:010}-{}", mode.as_str())
}

/// The key prefix under which every object of this layout lives, ending in `/`.
/// Leading and trailing slashes of the operator's prefix are ignored, so `a/b`, `/a/b/` and
/// `a/b/` are the same place.
pub fn root(prefix: &str) -> String {
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        format!("{LAYOUT_DIR}/")
    } else {
        format!("{p}/{LAYOUT_DIR}/")
    }
}

/// Whether a part name is safe as a key segment and as a file name in a recovered folder.
pub fn valid_part_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Why a key below the root is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey(pub &'static str);

/// Parses a key below the root (the root already stripped).
pub fn parse(rel: &str) -> Result<ObjectKey, ForeignKey> {
    let mut segs = rel.split('/');
    let (Some(gen_dir), Some(part), Some(name), None) =
        (segs.next(), segs.next(), segs.next(), segs.next())
    else {
        return Err(ForeignKey("not of the form GENERATION-MODE/PART/OBJECT"));
    };
    let (generation, mode) = parse_generation_dir(gen_dir)?;
    if !valid_part_name(part) || (mode == Mode::File && part != FILE_PART) {
        return Err(ForeignKey("bad part name"));
    }
    // <start>-<end>.<time>.<crc>.<kind>[.<stored>.<seal>]
    let mut f = name.splitn(6, '.');
    let (Some(range), Some(time_s), Some(crc_s), Some(kind_s)) =
        (f.next(), f.next(), f.next(), f.next())
    else {
        return Err(ForeignKey("object name not START-END.TIME.CRC.KIND"));
    };
    let sealed = match (f.next(), f.next()) {
        (None, _) => None,
        (Some(stored), Some(seal)) => Some((
            fixed_decimal(stored, 20).ok_or(ForeignKey("bad stored length"))?,
            Seal::parse(seal).ok_or(ForeignKey("unknown seal"))?,
        )),
        (Some(_), None) => return Err(ForeignKey("object name not START-END.TIME.CRC.KIND")),
    };
    let (start_s, end_s) = range
        .split_once('-')
        .ok_or(ForeignKey("range not START-END"))?;
    let start = fixed_decimal(start_s, 20).ok_or(ForeignKey("bad start offset"))?;
    let end = fixed_decimal(end_s, 20).ok_or(ForeignKey("bad end offset"))?;
    if end < start {
        return Err(ForeignKey("range ends before it starts"));
    }
    let time_ms = fixed_decimal(time_s, 13).ok_or(ForeignKey("bad time"))?;
    if crc_s.len() != 8
        || !crc_s
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(ForeignKey("bad CRC"));
    }
    let crc = u32::from_str_radix(crc_s, 16).map_err(|_| ForeignKey("bad CRC"))?;
    let kind = match kind_s {
        "delta" => Kind::Delta,
        "snap" if start == 0 => Kind::Snap,
        "snap" => return Err(ForeignKey("snapshot not starting at 0")),
        "merged" if end > start => Kind::Merged,
        "merged" => return Err(ForeignKey("empty merged object")),
        "piece" => Kind::Piece,
        _ => return Err(ForeignKey("unknown kind")),
    };
    let (stored, seal) = sealed.unwrap_or((end - start, Seal::Plain));
    Ok(ObjectKey {
        generation,
        mode,
        part: part.to_string(),
        start,
        end,
        time_ms,
        crc,
        kind,
        seal,
        stored: (0, stored),
        within: None,
    })
}

/// The name, inside a generation's folder, of the mark that it is being deleted.
pub const DROPPING: &str = "dropping";

/// `0000000007-file/dropping`: the key below the root that marks a generation being deleted.
pub fn dropping_key(generation: u64, mode: Mode) -> String {
    format!("{}/{DROPPING}", generation_dir(generation, mode))
}

/// The generation a key below the root marks as being deleted, if it is such a mark.
pub fn parse_dropping(rel: &str) -> Option<(u64, Mode)> {
    let dir = rel.strip_suffix(DROPPING)?.strip_suffix('/')?;
    parse_generation_dir(dir).ok()
}

/// Parses a generation's folder name (`0000000007-file`, without the slash).
pub fn parse_generation_dir(dir: &str) -> Result<(u64, Mode), ForeignKey> {
    let (gen_s, mode_s) = dir
        .split_once('-')
        .ok_or(ForeignKey("generation folder without a mode"))?;
    let generation = fixed_decimal(gen_s, 10).ok_or(ForeignKey("bad generation number"))?;
    let mode = Mode::parse(mode_s).ok_or(ForeignKey("unknown mode"))?;
    Ok((generation, mode))
}

/// Exactly `width` ASCII digits, no sign, fitting in u64.
fn fixed_decimal(s: &str, width: usize) -> Option<u64> {
    if s.len() != width || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ObjectKey {
        ObjectKey {
            generation: 3,
            mode: Mode::File,
            part: FILE_PART.into(),
            start: 100,
            end: 250,
            time_ms: 1_764_104_645_123,
            crc: 0xdead_beef,
            kind: Kind::Delta,
            seal: Seal::Plain,
            stored: (0, 150),
            within: None,
        }
    }

    #[test]
    fn key_round_trips_and_has_fixed_width() {
        let k = sample();
        let s = k.key(&root("backups/redis"));
        assert_eq!(
            s,
            "backups/redis/petrify-v1/0000000003-file/file/\
             00000000000000000100-00000000000000000250.1764104645123.deadbeef.delta"
        );
        let rel = s.strip_prefix(&root("backups/redis")).unwrap();
        assert_eq!(parse(rel).unwrap(), k);
    }

    #[test]
    fn lexical_order_is_chain_order() {
        let mut a = sample();
        let mut b = sample();
        a.start = 9;
        a.end = 100;
        b.start = 100;
        b.end = 1_000_000;
        assert!(a.key("") < b.key(""));
        b.generation = 10;
        a.generation = 9;
        a.start = 5_000_000;
        assert!(a.key("") < b.key(""));
    }

    #[test]
    fn root_normalises_slashes() {
        assert_eq!(root(""), "petrify-v1/");
        assert_eq!(root("/"), "petrify-v1/");
        assert_eq!(root("/a/b/"), "a/b/petrify-v1/");
        assert_eq!(root("a/b"), "a/b/petrify-v1/");
    }

    #[test]
    fn rejects_foreign_and_hostile_keys() {
        let good = sample().key("");
        for bad in [
            "",
            "README",
            "0000000003-file/file",
            "0000000003-tape/file/00000000000000000100-00000000000000000250.1764104645123.deadbeef.delta",
            "3-file/file/00000000000000000100-00000000000000000250.1764104645123.deadbeef.delta",
            "0000000003-file/other/00000000000000000100-00000000000000000250.1764104645123.deadbeef.delta",
            "0000000003-aofdir/../00000000000000000000-00000000000000000250.1764104645123.deadbeef.delta",
            "0000000003-aofdir/a/b/00000000000000000000-00000000000000000250.1764104645123.deadbeef.delta",
            "0000000003-file/file/00000000000000000300-00000000000000000250.1764104645123.deadbeef.delta",
            "0000000003-file/file/00000000000000000100-00000000000000000250.1764104645123.DEADBEEF.delta",
            "0000000003-file/file/00000000000000000100-00000000000000000250.1764104645123.deadbeef.snap",
            "0000000003-file/file/00000000000000000100-00000000000000000250.176410464512.deadbeef.delta",
            "0000000003-file/file/+0000000000000000100-00000000000000000250.1764104645123.deadbeef.delta",
            "0000000003-file/file/99999999999999999999-99999999999999999999.1764104645123.deadbeef.delta",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
        assert!(parse(&good).is_ok());
    }

    #[test]
    fn part_names() {
        assert!(valid_part_name("appendonly.aof.1.incr.aof"));
        assert!(valid_part_name("appendonly.aof.manifest"));
        for bad in ["", ".", "..", "a/b", "a\0b", "a b", "ä", &"x".repeat(201)] {
            assert!(!valid_part_name(bad), "accepted {bad:?}");
        }
    }
}
