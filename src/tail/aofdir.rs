//! The Redis 7 / Valkey folder follower (`appendonlydir/`): a manifest naming a base file and
//! incremental files, of which only the last one grows.
//!
//! Each tick reads the manifest, opens and measures every file it lists, and reads the manifest
//! again: only when both reads agree are the lengths a consistent state (a file captured after
//! its manifest was read). All objects of a tick share one observation time, and the manifest
//! (a `snap` object) goes last, so a tick cut short by a crash leaves no recovery point that
//! names files which never arrived. History files (`type h`) are neither uploaded nor
//! restored: Redis deletes them itself. A generation is one base file; what to do each tick is
//! decided by [`decide`], a pure function over what the tick saw, and generations are
//! numbered, resumed and started by the shared [`Lifecycle`].

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Exit, Result};
use crate::layout::Mode;
use crate::manifest::{
    FileType, ManifestEntry, base_of, find_manifest, live_files, parse_manifest, read_small,
};
use crate::timestamp;

use super::clock::ClockCheck;
use super::generation::{Lifecycle, Reason, ResumePlan};
use super::session::Session;
use super::shipped::{FileId, Shipped, open_followed};
use super::{Follower, TickError};

mod decide;

pub use decide::{DirSeen, DirStep, decide};

/// A second file cut or written over in place within this long stops persist (see
/// [`AofDirFollower::refuse_written_over`]).
const WRITTEN_OVER_WINDOW: Duration = Duration::from_secs(3600);

/// How often one tick re-reads a manifest that keeps changing before leaving it to the next.
const STABLE_TRIES: usize = 5;

/// Follows a Redis 7 AOF folder.
pub struct AofDirFollower {
    dir: PathBuf,
    life: Lifecycle,
    manifest_name: Option<String>,
    /// The base file of the current generation (`None`: a manifest without a base).
    base: Option<String>,
    /// Every file the manifest lists, held open so that Redis deleting it after a rewrite
    /// cannot take bytes that were not uploaded yet.
    parts: BTreeMap<String, Shipped>,
    /// The manifest bytes last stored in this generation.
    manifest_uploaded: Option<Vec<u8>>,
    /// The folder itself when the generation started: a folder renamed over the path (a
    /// restore) is another history.
    dir_id: Option<FileId>,
    /// Why the next tick must start a new generation (held files were replaced).
    restart: Option<Reason>,
    said_waiting: bool,
    /// The time of the generation's newest point: marks make points only after it.
    last_point_ms: u64,
    /// When a file was last found cut or written over in place (see
    /// [`AofDirFollower::refuse_written_over`]).
    written_over: Option<Instant>,
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
    /// `resume`: the bucket's newest generation, to continue if the folder still matches it.
    pub fn new(dir: &Path, resume: Option<ResumePlan>, next_number: u64) -> Result<AofDirFollower> {
        let mut f = AofDirFollower {
            dir: dir.to_path_buf(),
            life: Lifecycle::new(Mode::AofDir, dir, next_number),
            manifest_name: None,
            base: None,
            parts: BTreeMap::new(),
            manifest_uploaded: None,
            dir_id: None,
            restart: None,
            said_waiting: false,
            last_point_ms: 0,
            written_over: None,
        };
        if let Some(plan) = resume {
            f.try_resume(&plan)?;
        }
        Ok(f)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Continues the plan's generation when the folder has the same base and every file the
    /// bucket holds is still a prefix of the local file (by CRC).
    fn try_resume(&mut self, plan: &ResumePlan) -> Result<()> {
        let why_not = |why: String| {
            log::info!("not resuming generation {}: {why}", plan.generation.number);
            Ok(())
        };
        let Some(manifest_name) = self.manifest_name_now()? else {
            return why_not("the folder has no manifest yet".into());
        };
        let Ok(local) = read_small(&self.path(&manifest_name)) else {
            return why_not("the manifest cannot be read".into());
        };
        let entries = parse_manifest(&local).map_err(|e| self.bad_manifest(&e))?;
        let local_base = base_of(&entries);
        let bucket_base = plan.parts.keys().find(|p| p.contains(".base.")).cloned();
        if local_base != bucket_base {
            return why_not(format!(
                "its base is {bucket_base:?}, the folder's is {local_base:?}"
            ));
        }
        let dir = self.dir.clone();
        let open = |name: &str| -> Result<Option<(fs::File, FileId)>> {
            Ok(open_followed(&dir.join(name))?.map(|(f, m)| (f, FileId::of(&m))))
        };
        match self.life.resume(plan, open)? {
            Ok(parts) => {
                self.manifest_name = Some(manifest_name);
                self.base = local_base;
                self.parts = parts;
                self.dir_id = self.dir_id_now();
                self.last_point_ms = plan.last_time_ms;
                Ok(())
            }
            Err(why) => why_not(why),
        }
    }

    /// Redis and Valkey only append to AOF files, and cut a torn last command once, when they
    /// start after a crash or a failed write: that starts a new generation (at WARN, said by
    /// the caller). The same again within [`WRITTEN_OVER_WINDOW`] is not a repair but a mode
    /// that writes files over (fixed-size recycled AOF files, valkey#3515): following it
    /// would start a generation, and upload the base again, at every look. Persist stops.
    fn refuse_written_over(&mut self, reason: &Reason) -> Result<()> {
        if !matches!(reason, Reason::Truncated { .. } | Reason::Changed { .. }) {
            return Ok(());
        }
        let now = Instant::now();
        if self
            .written_over
            .is_some_and(|t| now.duration_since(t) < WRITTEN_OVER_WINDOW)
        {
            return Err(Error::new(
                Exit::Data,
                format!(
                    "{}: {reason}, the second time within an hour: Redis and Valkey only append \
                     to AOF files (and cut a torn last command once after a crash); an AOF mode \
                     that writes its files over (fixed-size recycled files) cannot be backed up \
                     by following appends: turn that mode off and start persist again (every \
                     point already in the bucket stays recoverable)",
                    self.dir.display()
                ),
            ));
        }
        self.written_over = Some(now);
        Ok(())
    }

    /// When a generation ends: the file whose marks its last uploads cut at (the last
    /// incremental file its stored manifest names) and its newest point.
    fn marked_on_finish(&self) -> Option<(String, u64)> {
        let stored = parse_manifest(self.manifest_uploaded.as_deref()?).ok()?;
        Some((last_incr(&stored)?.to_string(), self.last_point_ms))
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

    /// Compares every held file that the bucket holds bytes of with those bytes (see
    /// [`super::verify`]): the first one that differs, and how.
    fn changed_part(&mut self, obs: &Observation) -> Result<Option<(String, String)>> {
        for (name, &len) in &obs.lengths {
            let Some(p) = self.parts.get_mut(name) else {
                continue;
            };
            if len < p.uploaded() {
                continue; // a shrink, said as such
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

    /// What the tick saw, for [`decide`].
    fn seen(&mut self, obs: &Observation, clock: ClockCheck) -> Result<DirSeen> {
        let shrank = obs.lengths.iter().find_map(|(name, &len)| {
            let p = self.parts.get(name)?;
            (len < p.uploaded()).then(|| (name.clone(), p.uploaded(), len))
        });
        let news = self.manifest_uploaded.as_deref() != Some(&obs.manifest[..])
            || obs
                .lengths
                .iter()
                .any(|(name, len)| self.parts.get(name).is_some_and(|p| p.behind(*len)));
        Ok(DirSeen {
            started: self.life.current().is_some(),
            restart: self.restart.clone(),
            replaced: obs.replaced.clone(),
            shrank,
            changed: self.changed_part(obs)?,
            base_changed: base_of(&obs.entries) != self.base,
            news,
            clock: Some(clock),
        })
    }
}

/// The incremental file a manifest lists last: the only one Redis appends to.
fn last_incr(entries: &[ManifestEntry]) -> Option<&str> {
    entries
        .iter()
        .filter(|e| e.kind == FileType::Incr)
        .max_by_key(|e| e.seq)
        .map(|e| e.name.as_str())
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
    // A manifest petrify cannot follow is refused before anything is written.
    for n in names.iter().filter(|n| n.ends_with(".manifest")) {
        let path = dir.join(n);
        if let Ok(bytes) = read_small(&path)
            && let Err(why) = parse_manifest(&bytes)
        {
            return Err(Error::new(Exit::Data, format!("{}: {why}", path.display())));
        }
    }
    Ok(())
}

impl Follower for AofDirFollower {
    fn tick(&mut self, s: &mut Session) -> std::result::Result<(), TickError> {
        // Taken before anything is read: a write Redis acknowledged before this time is in
        // what the tick uploads (see the file follower's labels).
        let seen = timestamp::now_ms();
        let Some(obs) = self.observe()? else {
            return Ok(());
        };
        let dir_seen = self.seen(&obs, s.clock.check(seen))?;
        match decide(&dir_seen) {
            DirStep::Idle => return Ok(()),
            DirStep::Wait(d) => {
                std::thread::sleep(d);
                return self.tick(s); // observe again, after the wait
            }
            DirStep::Reopen(reason) => {
                // Redis never gives a name to another file: the held files are the old
                // history. Finish it, and start again from the files the path names now.
                log::warn!("{}: {reason}", self.dir.display());
                let marked = self.marked_on_finish();
                let marked = marked.as_ref().map(|(n, t)| (n.as_str(), *t));
                self.life.finish(s, self.parts.iter_mut(), None, marked)?;
                self.parts.clear();
                self.dir_id = None;
                self.restart = Some(reason);
                return self.tick(s);
            }
            DirStep::Start(reason) => {
                self.refuse_written_over(&reason)?;
                let skip = dir_seen.changed.as_ref().map(|(n, _)| n.as_str());
                let marked = self.marked_on_finish();
                let marked = marked.as_ref().map(|(n, t)| (n.as_str(), *t));
                self.life.finish(s, self.parts.iter_mut(), skip, marked)?;
                // Files the new manifest does not list are closed; the others start over.
                self.parts.retain(|name, _| obs.lengths.contains_key(name));
                let bytes = obs.lengths.values().sum();
                self.life
                    .start(s, seen, self.parts.values_mut(), &reason, bytes);
                self.restart = None;
                self.base = base_of(&obs.entries);
                self.manifest_uploaded = None;
                self.dir_id = self.dir_id_now();
            }
            DirStep::Upload => {}
        }
        let Some(generation) = self.life.current() else {
            return Ok(());
        };
        let floor = s.clock.last();
        let time = s.clock.at_least(seen);
        // One observation, one point: the manifest goes last when it is uploaded (a reader must
        // never see a manifest naming files that are not there), and whatever goes last closes
        // the point; everything before it is a piece (see `layout`), so a tick cut short
        // leaves no point that holds only part of what Redis had written.
        let manifest_changed = self.manifest_uploaded.as_deref() != Some(&obs.manifest[..]);
        let unlisted_pending = self
            .parts
            .iter()
            .any(|(name, p)| !p.in_bucket() && !obs.lengths.contains_key(name));
        let put_manifest = (manifest_changed || unlisted_pending) && self.manifest_name.is_some();
        let behind: Vec<(&String, u64)> = obs
            .lengths
            .iter()
            .filter(|(name, len)| self.parts.get(*name).is_some_and(|p| p.behind(**len)))
            .map(|(name, &len)| (name, len))
            .collect();
        // Redis's `#TS` marks are points inside the growing file when it alone moved: the
        // stored manifest then names it last, so a cut in it, with the files before it
        // whole, is a folder Redis held at that second.
        let marked = match (put_manifest, &behind[..]) {
            (false, [(name, _)]) => last_incr(&obs.entries) == Some(name.as_str()),
            _ => false,
        };
        // A look in which every file that moved is new to the generation (its first look, or
        // the new incremental file of a rewrite that began while the older ones sat still):
        // a cut at a mark in the growing file, with the files before it whole, is a folder
        // Redis held too (a new base holds every write made before its rewrite began). That
        // file goes first; the others and the manifest then carry the time of its first
        // point, so each point has them all, and the manifest, last, still makes the look
        // appear whole or not at all.
        let last = last_incr(&obs.entries);
        let opening = put_manifest
            && behind.iter().any(|(n, _)| Some(n.as_str()) == last)
            && behind
                .iter()
                .all(|(n, _)| self.parts.get(*n).is_some_and(|p| !p.in_bucket()));
        // From here objects of this time may land, even if the tick fails: later marks must
        // make points after it.
        let after = std::mem::replace(&mut self.last_point_ms, time);
        let mut label = time;
        if opening
            && let Some(name) = last
            && let (Some(&len), Some(p)) = (obs.lengths.get(name), self.parts.get_mut(name))
        {
            let first = p.ship_marked(s, generation, name, len, (time, floor, false))?;
            label = first.unwrap_or(time);
        }
        for (i, &(name, len)) in behind.iter().enumerate() {
            let Some(p) = self.parts.get_mut(name) else {
                continue;
            };
            let closes = !put_manifest && i + 1 == behind.len();
            match (marked, opening && Some(name.as_str()) == last) {
                (_, true) => {}
                (true, false) => {
                    p.ship_marked(s, generation, name, len, (time, after, true))?;
                }
                (false, false) => p.ship(s, generation, name, len, (label, closes))?,
            }
        }
        if let (true, Some(manifest_name)) = (put_manifest, self.manifest_name.clone()) {
            s.up.put_snap(generation, &manifest_name, &obs.manifest, label)?;
            self.manifest_uploaded = Some(obs.manifest);
        }
        // The look's closing object landed: every file's pieces of it belong to a point.
        for p in self.parts.values_mut() {
            p.close_point(label);
            p.close_point(time);
        }
        Ok(())
    }

    fn pending(&self) -> u64 {
        self.parts.values().map(Shipped::pending).sum()
    }
}
