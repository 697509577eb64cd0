//! Redis 7 / Valkey multi-part AOF folders (`appendonlydir/`): a manifest naming a base file and
//! incremental files, of which only the last one grows. This module follows such a folder for
//! `persist` and rebuilds one for `recover`.
//!
//! A generation is one base file. Each tick reads the manifest, opens and measures every file
//! it lists, and reads the manifest again: only when both reads agree are the lengths a
//! consistent state (a file captured after its manifest was read). All objects of a tick share
//! one observation time, and the manifest (a `snap` object) goes last, so a tick cut short by a
//! crash leaves no recovery point that names files which never arrived. History files
//! (`type h`) are neither uploaded nor restored: Redis deletes them itself.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::chain::{self, GenId, Generation, RecoveryPoint};
use crate::error::{Error, Exit, Result};
use crate::layout::{self, Mode};
use crate::recover::{Target, TempPath};
use crate::s3::Store;
use crate::tail::{ClockCheck, FileId, Follower, Shipped, TickError, Uploader, open_followed};

/// Manifests are a few lines; anything larger is not one.
const MAX_MANIFEST: u64 = 1 << 20;
/// How often one tick re-reads a manifest that keeps changing before leaving it to the next.
const STABLE_TRIES: usize = 5;

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
                _ => {} // later Redis versions may add keys
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

/// Follows a Redis 7 AOF folder.
pub struct AofDirFollower {
    dir: PathBuf,
    manifest_name: Option<String>,
    generation: Option<GenId>,
    /// The base file of the current generation (`None`: a manifest without a base).
    base: Option<String>,
    next_number: u64,
    /// Every file the manifest lists, held open so that Redis deleting it after a rewrite
    /// cannot take bytes that were not uploaded yet.
    parts: BTreeMap<String, Shipped>,
    /// The manifest bytes last stored in this generation.
    manifest_uploaded: Option<Vec<u8>>,
    /// The folder itself when the generation started: a folder renamed over the path (a
    /// restore) is another history.
    dir_id: Option<FileId>,
    /// Why the next tick must start a new generation (a held file was replaced).
    must_restart: Option<String>,
    said_waiting: bool,
}

/// One consistent look at the folder.
struct Observation {
    manifest: Vec<u8>,
    entries: Vec<ManifestEntry>,
    /// Current length of each live file, measured after the manifest was read.
    lengths: BTreeMap<String, u64>,
    /// A held file (or the folder) that the path no longer names: what was replaced.
    replaced: Option<String>,
}

impl AofDirFollower {
    /// `found`: what the bucket held at start, to resume its newest generation if the folder
    /// still matches it.
    pub fn new(dir: &Path, gens: &[Generation], next_number: u64) -> Result<AofDirFollower> {
        let mut f = AofDirFollower {
            dir: dir.to_path_buf(),
            manifest_name: None,
            generation: None,
            base: None,
            next_number,
            parts: BTreeMap::new(),
            manifest_uploaded: None,
            dir_id: None,
            must_restart: None,
            said_waiting: false,
        };
        f.try_resume(gens)?;
        Ok(f)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Continues the bucket's newest generation when it is an `aofdir` one with the same base,
    /// and every file it holds is still a prefix of the local file (by CRC).
    fn try_resume(&mut self, gens: &[Generation]) -> Result<()> {
        let Some(g) = gens.iter().max_by_key(|g| g.id) else {
            return Ok(());
        };
        let why_not = |why: String| {
            log::info!("not resuming generation {}: {why}", g.id.number);
            Ok(())
        };
        if g.id.mode != Mode::AofDir {
            return why_not("it is a single-file backup".into());
        }
        let Some(manifest_name) = self.manifest_name_now()? else {
            return why_not("the folder has no manifest yet".into());
        };
        let Ok(local) = read_small(&self.path(&manifest_name)) else {
            return why_not("the manifest cannot be read".into());
        };
        let entries = parse_manifest(&local).map_err(|e| self.bad_manifest(&e))?;
        let local_base = entries
            .iter()
            .find(|e| e.kind == FileType::Base)
            .map(|e| e.name.clone());
        let bucket_base = g.parts.keys().find(|p| p.contains(".base.")).cloned();
        if local_base != bucket_base {
            return why_not(format!(
                "its base is {bucket_base:?}, the folder's is {local_base:?}"
            ));
        }
        let mut parts = BTreeMap::new();
        for (name, objs) in &g.parts {
            if name.ends_with(".manifest") {
                continue;
            }
            let plan = match chain::plan_part(objs, u64::MAX) {
                Ok(p) => p,
                Err(e) => return why_not(e.to_string()),
            };
            let (end, crc) = chain::chain_crc(&plan);
            let Ok(Some((file, meta))) = open_followed(&self.path(name)) else {
                return why_not(format!("{name} is gone"));
            };
            match Shipped::resumed(file, FileId::of(&meta), end, crc) {
                Ok(Ok(shipped)) => parts.insert(name.clone(), shipped),
                _ => return why_not(format!("{name} no longer starts with the uploaded bytes")),
            };
        }
        log::info!(
            "resuming generation {} of {} (base {})",
            g.id.number,
            self.dir.display(),
            local_base.as_deref().unwrap_or("none")
        );
        self.manifest_name = Some(manifest_name);
        self.generation = Some(g.id);
        self.base = local_base;
        self.parts = parts;
        self.dir_id = self.dir_id_now();
        Ok(())
    }

    fn dir_id_now(&self) -> Option<FileId> {
        fs::metadata(&self.dir).ok().map(|m| FileId::of(&m))
    }

    fn manifest_name_now(&self) -> Result<Option<String>> {
        match find_manifest(&self.dir) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("cannot read the folder", &self.dir, &e)),
        }
    }

    fn bad_manifest(&self, why: &str) -> Error {
        Error::new(
            Exit::Data,
            format!(
                "{}: {why}; is this a Redis 7 appendonlydir?",
                self.dir
                    .join(self.manifest_name.as_deref().unwrap_or("*.manifest"))
                    .display()
            ),
        )
    }

    /// Reads the manifest, opens and measures what it lists, and reads it again; `None` when
    /// there is no manifest yet or it kept changing.
    fn observe(&mut self) -> Result<Option<Observation>> {
        if self.manifest_name.is_none() {
            self.manifest_name = self.manifest_name_now()?;
        }
        let Some(manifest_name) = self.manifest_name.clone() else {
            if !self.said_waiting {
                log::info!("waiting for a Redis manifest in {}", self.dir.display());
                self.said_waiting = true;
            }
            return Ok(None);
        };
        let manifest_path = self.path(&manifest_name);
        'again: for _ in 0..STABLE_TRIES {
            let manifest = match read_small(&manifest_path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue 'again,
                Err(e) => return Err(Error::io("cannot read", &manifest_path, &e)),
            };
            let entries = parse_manifest(&manifest).map_err(|e| self.bad_manifest(&e))?;
            let mut lengths = BTreeMap::new();
            let mut replaced = None;
            if self.dir_id.is_some() && self.dir_id_now() != self.dir_id {
                replaced = Some("the folder".to_string());
            }
            for e in live_files(&entries) {
                let path = self.path(&e.name);
                if let Some(held) = self.parts.get(&e.name) {
                    // Identity, not only the name: a restored folder reuses Redis's names.
                    match fs::metadata(&path) {
                        Ok(m) if FileId::of(&m) != held.id => {
                            replaced.get_or_insert_with(|| e.name.clone());
                        }
                        Ok(_) => {}
                        Err(err) if err.kind() == io::ErrorKind::NotFound => continue 'again,
                        Err(err) => return Err(Error::io("cannot stat", &path, &err)),
                    }
                } else {
                    match open_followed(&path)? {
                        Some((file, meta)) => {
                            let id = FileId::of(&meta);
                            self.parts.insert(e.name.clone(), Shipped::new(file, id));
                        }
                        // Renamed or deleted since the manifest was read: read it again.
                        None => continue 'again,
                    }
                }
                let part = &self.parts[&e.name];
                let len = part
                    .file
                    .metadata()
                    .map_err(|err| Error::io("cannot stat", &self.path(&e.name), &err))?
                    .len();
                lengths.insert(e.name.clone(), len);
            }
            match read_small(&manifest_path) {
                Ok(again) if again == manifest => {
                    return Ok(Some(Observation {
                        manifest,
                        entries,
                        lengths,
                        replaced,
                    }));
                }
                _ => continue 'again,
            }
        }
        log::debug!("the manifest kept changing; trying again next tick");
        Ok(None)
    }

    /// Uploads the growth of every held file through its descriptor, labelled with the file's
    /// modification time: a file Redis has moved on from stopped changing then, so that is the
    /// moment its old generation's last recovery point describes.
    /// `changed`: a file whose uploaded bytes are no longer its own, left as it was.
    fn finish_generation(
        &mut self,
        up: &mut Uploader,
        changed: Option<&str>,
    ) -> std::result::Result<(), TickError> {
        let Some(generation) = self.generation else {
            return Ok(());
        };
        let mut tails: Vec<(u64, String, u64)> = Vec::new();
        for (name, p) in &self.parts {
            if !p.in_bucket() || changed == Some(name.as_str()) {
                continue;
            }
            let meta = p
                .file
                .metadata()
                .map_err(|e| Error::io("cannot stat", &self.path(name), &e))?;
            if meta.len() > p.uploaded() {
                tails.push((crate::tail::mtime_ms(&p.file), name.clone(), meta.len()));
            }
        }
        tails.sort();
        for (mtime, name, len) in tails {
            let Some(p) = self.parts.get_mut(&name) else {
                continue;
            };
            let time = up.clock.at_least(mtime);
            p.ship(up, generation, &name, len, time)
                .map_err(TickError::S3)?;
        }
        Ok(())
    }

    fn start_generation(&mut self, up: &mut Uploader, seen: u64, obs: &Observation, why: &str) {
        up.clock.start_generation(seen);
        let id = GenId {
            number: self.next_number,
            mode: Mode::AofDir,
        };
        self.next_number += 1;
        self.generation = Some(id);
        self.base = base_of(&obs.entries);
        self.manifest_uploaded = None;
        self.dir_id = self.dir_id_now();
        // Files the new manifest does not list are closed; the others start over in the new
        // generation (whole content: generations share no objects).
        self.parts.retain(|name, _| obs.lengths.contains_key(name));
        for p in self.parts.values_mut() {
            p.restart();
        }
        log::info!(
            "starting generation {} of {} ({why}; base {}, {} bytes)",
            id.number,
            self.dir.display(),
            self.base.as_deref().unwrap_or("none"),
            obs.lengths.values().sum::<u64>()
        );
    }
}

/// A folder that holds files but nothing Redis writes (`*.manifest`, `*.aof`, `*.rdb`) is
/// not an AOF folder: a mistaken `--file`. An empty one, or one Redis is still filling, is
/// waited for.
pub fn refuse_foreign_folder(dir: &Path) -> Result<()> {
    let names: Vec<String> = fs::read_dir(dir)
        .map_err(|e| Error::io("cannot read the folder", dir, &e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let redis_like =
        |n: &String| n.ends_with(".manifest") || n.ends_with(".aof") || n.ends_with(".rdb");
    if !names.is_empty() && !names.iter().any(redis_like) {
        return Err(Error::new(
            Exit::Usage,
            format!(
                "{} is a folder but not a Redis AOF folder (no *.manifest, *.aof or *.rdb): \
                 give an append-only file, or Redis 7's appendonlydir/",
                dir.display()
            ),
        ));
    }
    Ok(())
}

impl AofDirFollower {
    /// Whether the observation holds anything the bucket lacks.
    fn has_news(&self, obs: &Observation) -> bool {
        self.manifest_uploaded.as_deref() != Some(&obs.manifest[..])
            || obs
                .lengths
                .iter()
                .any(|(name, len)| self.parts.get(name).is_some_and(|p| p.behind(*len)))
    }
}

fn base_of(entries: &[ManifestEntry]) -> Option<String> {
    entries
        .iter()
        .find(|e| e.kind == FileType::Base)
        .map(|e| e.name.clone())
}

impl AofDirFollower {
    /// Compares every held file that the bucket holds bytes of with those bytes (see
    /// [`crate::tail::verify`]): the first one that differs, and how.
    fn changed_part(&mut self, obs: &Observation) -> Result<Option<(String, String)>> {
        for (name, &len) in &obs.lengths {
            let Some(p) = self.parts.get_mut(name) else {
                continue;
            };
            if len < p.uploaded() {
                continue; // a shrink: said as such by the caller
            }
            let check = p
                .verify()
                .map_err(|e| Error::io("cannot read", &self.dir.join(name), &e))?;
            if let Err(m) = check {
                return Ok(Some((name.clone(), m.0)));
            }
        }
        Ok(None)
    }
}

impl Follower for AofDirFollower {
    fn tick(&mut self, up: &mut Uploader) -> std::result::Result<(), TickError> {
        // Taken before anything is read: a write Redis acknowledged before this time is in
        // what the tick uploads (see the file follower's `Label::ObservedAt`).
        let seen = crate::timestamp::now_ms();
        let Some(obs) = self.observe()? else {
            return Ok(());
        };
        if let Some(what) = &obs.replaced {
            // Redis never reuses a name for another file: a replaced one means the folder was
            // restored or replaced under Redis. The held files are the old history; finish it
            // and start again from the files the path names now.
            log::warn!(
                "{}: {what} is no longer the one persist holds open (the folder was restored or \
                 replaced): starting a new generation from what is there now",
                self.dir.display()
            );
            self.finish_generation(up, None)?;
            self.parts.clear();
            self.dir_id = None;
            self.must_restart = Some(format!("{what} replaced"));
            return self.tick(up);
        }
        let changed = self.changed_part(&obs)?;
        let shrank = obs
            .lengths
            .iter()
            .find(|(name, len)| self.parts.get(*name).is_some_and(|p| **len < p.uploaded()));
        let mut why = match (&self.generation, shrank, &changed) {
            (None, _, _) => Some((false, "new folder".to_string())),
            (Some(_), Some((name, len)), _) => Some((
                true,
                format!("{name} shrank to {len} bytes (Redis truncated it after a crash?)"),
            )),
            (Some(_), None, Some((name, what))) => Some((
                true,
                format!("{name}: {what}; the bytes in the bucket are no longer the file's"),
            )),
            (Some(_), None, None) if base_of(&obs.entries) != self.base => {
                Some((false, "new base file after a rewrite".into()))
            }
            _ => None,
        };
        if let Some(w) = self.must_restart.take() {
            why = Some((true, w));
        }
        if why.is_none() && self.has_news(&obs) {
            match up.clock.check(seen) {
                ClockCheck::Ok => {}
                ClockCheck::Wait(d) => {
                    std::thread::sleep(d);
                    return self.tick(up); // observe again, after the wait
                }
                ClockCheck::SteppedBack(_) => why = Some((true, "the clock went back".into())),
            }
        }
        if let Some((surprising, why)) = why {
            if surprising {
                log::warn!("{}: {why}", self.dir.display());
            }
            self.finish_generation(up, changed.as_ref().map(|(n, _)| n.as_str()))?;
            self.start_generation(up, seen, &obs, &why);
        }
        let Some(generation) = self.generation else {
            return Ok(());
        };
        if !self.has_news(&obs) {
            return Ok(()); // idle: no request
        }
        let time = up.clock.at_least(seen);
        for (name, &len) in &obs.lengths {
            let Some(p) = self.parts.get_mut(name) else {
                continue;
            };
            if p.behind(len) {
                p.ship(up, generation, name, len, time)
                    .map_err(TickError::S3)?;
            }
        }
        let manifest_changed = self.manifest_uploaded.as_deref() != Some(&obs.manifest[..]);
        if manifest_changed || !self.parts.values().all(|p| p.in_bucket()) {
            let Some(manifest_name) = self.manifest_name.clone() else {
                return Ok(());
            };
            up.put_snap(generation, &manifest_name, &obs.manifest, time)
                .map_err(TickError::S3)?;
            self.manifest_uploaded = Some(obs.manifest);
        }
        Ok(())
    }

    fn pending(&self) -> u64 {
        self.parts.values().map(Shipped::pending).sum()
    }
}

fn read_small(path: &Path) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)?.take(MAX_MANIFEST).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Rebuilds the folder of an `aofdir` recovery point into a temporary folder beside the
/// target, then renames it into place.
pub fn recover_dir(
    store: &Store,
    root: &str,
    g: &Generation,
    point: &RecoveryPoint,
    target: &Target,
) -> Result<()> {
    if target.path.exists() && !target.is_dir {
        return Err(Error::new(
            Exit::CantCreate,
            format!(
                "{} is a file, but this recovery point is a Redis folder: give a folder path",
                target.path.display()
            ),
        ));
    }
    let damaged = |e: chain::ChainError| {
        Error::new(
            Exit::Data,
            format!(
                "generation {} is damaged: {e}; `petrify list` shows the points that can \
                 still be recovered",
                g.id.number
            ),
        )
    };
    let manifest_name = chain::manifest_part(g).ok_or_else(|| {
        Error::new(
            Exit::Data,
            format!("generation {} has no single manifest", g.id.number),
        )
    })?;
    let tmp = TempPath::new(&target.path, true)?;
    fs::create_dir(&tmp.path).map_err(|e| Error::io("cannot create", &tmp.path, &e))?;

    let fetch_part = |name: &str| -> Result<u64> {
        let objects = g.parts.get(name).map(Vec::as_slice).unwrap_or(&[]);
        let plan = chain::plan_part(objects, point.time_ms)
            .map_err(|e| damaged(chain::ChainError(format!("{name}: {}", e.0))))?;
        let path = tmp.path.join(name);
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io("cannot create", &path, &e))?;
        crate::fetch::fetch_chain(store, root, &plan, &file)?;
        file.sync_all()
            .map_err(|e| Error::io("cannot write", &path, &e))?;
        Ok(plan.len() as u64)
    };

    let mut objects = fetch_part(manifest_name)?;
    let manifest_path = tmp.path.join(manifest_name);
    let manifest =
        read_small(&manifest_path).map_err(|e| Error::io("cannot read", &manifest_path, &e))?;
    let entries = parse_manifest(&manifest).map_err(|e| {
        Error::new(
            Exit::Data,
            format!(
                "the stored manifest of generation {} is invalid: {e}",
                g.id.number
            ),
        )
    })?;
    for e in live_files(&entries) {
        objects += fetch_part(&e.name)?;
    }
    File::open(&tmp.path)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("cannot sync", &tmp.path, &e))?;
    target.install(tmp)?;
    log::info!(
        "recovered {} ({} files, {} bytes from {objects} object(s))",
        target.path.display(),
        live_files(&entries).count() + 1,
        point.bytes
    );
    Ok(())
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
