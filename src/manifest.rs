//! Redis 7 / Valkey multi-part AOF manifests (`appendonly.aof.manifest`): a base file and
//! incremental files, of which only the last one grows. Parsing and reading only, shared by
//! persist (which follows such a folder) and recover (which rebuilds one). Pure but for the
//! two small readers at the end.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;

use crate::layout;

/// Manifests are a few lines; anything larger is not one.
const MAX_MANIFEST: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    Base,
    Incr,
    History,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    pub name: String,
    pub seq: u64,
    pub kind: FileType,
}

/// Parses a Redis 7 manifest: lines of `file NAME seq N type b|i|h` (keys in any order).
/// Names must be plain file names (see [`layout::valid_part_name`]): a quoted name, a `/` or a
/// `..` is refused, so nothing can be written outside the folder.
pub fn parse_manifest(bytes: &[u8]) -> std::result::Result<Vec<ManifestEntry>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the manifest is not text".to_string())?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        if !words.len().is_multiple_of(2) {
            return Err(format!("manifest line {} is not KEY VALUE pairs", i + 1));
        }
        let (mut name, mut seq, mut kind) = (None, None, None);
        for kv in words.chunks(2) {
            match kv[0] {
                "file" => name = Some(kv[1]),
                "seq" => seq = kv[1].parse::<u64>().ok(),
                "type" => {
                    kind = match kv[1] {
                        "b" => Some(FileType::Base),
                        "i" => Some(FileType::Incr),
                        "h" => Some(FileType::History),
                        _ => None,
                    }
                }
                // Redis 7 and Valkey 9 write these three and nothing else. Another key is a
                // format petrify has not seen: perhaps a mode whose files are not appended to
                // (fixed-size files written over, valkey#3515), which persist would mirror
                // wrongly. Refused, loudly.
                other => {
                    return Err(format!(
                        "manifest line {} has the field {other:?}, which petrify does not know \
                         (Redis 7 and Valkey 9 write file, seq and type): the server may be in \
                         an AOF mode whose files are not only appended to; petrify follows the \
                         default multi-part AOF (appendonly yes) only",
                        i + 1
                    ));
                }
            }
        }
        let (Some(name), Some(seq), Some(kind)) = (name, seq, kind) else {
            return Err(format!("manifest line {} lacks file, seq or type", i + 1));
        };
        if !layout::valid_part_name(name) || name.ends_with(".manifest") {
            return Err(format!(
                "manifest line {} names {name:?}: only plain names of letters, digits, . _ - \
                 are supported",
                i + 1
            ));
        }
        out.push(ManifestEntry {
            name: name.to_string(),
            seq,
            kind,
        });
    }
    let bases = out.iter().filter(|e| e.kind == FileType::Base).count();
    if bases > 1 {
        return Err("the manifest lists more than one base file".into());
    }
    if !out.iter().any(|e| e.kind == FileType::Incr) {
        return Err("the manifest lists no incremental file".into());
    }
    Ok(out)
}

/// The files a recovery point needs: the base and incremental files, in manifest order.
pub fn live_files(entries: &[ManifestEntry]) -> impl Iterator<Item = &ManifestEntry> {
    entries.iter().filter(|e| e.kind != FileType::History)
}

/// The single `*.manifest` file in `dir`, if there is exactly one.
pub fn find_manifest(dir: &Path) -> io::Result<Option<String>> {
    let mut found = None;
    for e in fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".manifest") && layout::valid_part_name(&name) {
            if found.is_some() {
                return Err(io::Error::other(
                    "more than one *.manifest file: which Redis owns this folder?",
                ));
            }
            found = Some(name);
        }
    }
    Ok(found)
}

/// The base file a manifest names, if any.
pub fn base_of(entries: &[ManifestEntry]) -> Option<String> {
    entries
        .iter()
        .find(|e| e.kind == FileType::Base)
        .map(|e| e.name.clone())
}

/// Reads a file of at most 1 MiB (a manifest).
pub fn read_small(path: &Path) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)?.take(MAX_MANIFEST).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_redis_manifests() {
        let m = b"file appendonly.aof.2.base.rdb seq 2 type h\n\
                  file appendonly.aof.3.base.rdb seq 3 type b\n\
                  file appendonly.aof.3.incr.aof seq 3 type i\n\
                  file appendonly.aof.4.incr.aof seq 4 type i\n";
        let e = parse_manifest(m).unwrap();
        assert_eq!(e.len(), 4);
        assert_eq!(e[1].kind, FileType::Base);
        let live: Vec<&str> = live_files(&e).map(|e| e.name.as_str()).collect();
        assert_eq!(
            live,
            [
                "appendonly.aof.3.base.rdb",
                "appendonly.aof.3.incr.aof",
                "appendonly.aof.4.incr.aof"
            ]
        );
        assert_eq!(base_of(&e).as_deref(), Some("appendonly.aof.3.base.rdb"));
        // keys in another order, no base
        let e = parse_manifest(b"type i seq 1 file x.1.incr.aof\n").unwrap();
        assert_eq!(base_of(&e), None);
    }

    #[test]
    fn refuses_hostile_or_broken_manifests() {
        for bad in [
            &b"file ../../etc/passwd seq 1 type i\n"[..],
            b"file a/b seq 1 type i\n",
            b"file \"a b\" seq 1 type i\n",
            b"file .. seq 1 type i\n",
            b"file x.manifest seq 1 type i\n",
            b"file a seq x type i\n",
            b"file a seq 1 type q\n",
            b"file a seq 1\n",
            b"file a seq 1 type b\n",
            b"file a seq 1 type b\nfile b seq 2 type b\nfile c seq 1 type i\n",
            b"\xff\xfe",
            b"file a.1.incr.aof seq 1 type i size 1048576\n",
            b"",
        ] {
            assert!(
                parse_manifest(bad).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
