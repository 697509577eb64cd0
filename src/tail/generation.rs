//! The generation lifecycle both followers share: numbering, resuming the bucket's newest
//! generation, ending one (the last bytes of files that stopped being the datastore's,
//! labelled with their modification time) and starting the next on the true clock, with one
//! vocabulary for why ([`Reason`]).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::chain::{self, GenId, Generation};
use crate::error::Result;
use crate::layout::{self, Mode};

use super::held::{Held, held_from_chain};
use super::session::Session;
use super::shipped::{FileId, Shipped};
use super::source::mtime_ms;
use super::upload::UploadError;

/// Why a generation ends and the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Nothing in the bucket to continue: the first generation of this source here.
    New,
    /// The path names another file (a rewrite renamed over it, a rotation), the old one done.
    Replaced,
    /// A Redis rewrite finished: a new base file.
    NewBase,
    /// Files held open are no longer the ones at their paths: the Redis folder was restored
    /// or replaced under Redis. `what`: the first one seen.
    Restored { what: String },
    /// A part is shorter than what was uploaded of it.
    Truncated { part: String, from: u64, to: u64 },
    /// Uploaded bytes are no longer the part's (see `verify`).
    Changed { part: String, what: String },
    /// The clock went back further than can be waited out.
    ClockBack,
}

impl Reason {
    /// Whether an operator should hear of it at WARN: anything but a first start or a Redis
    /// rewrite, which datastores do by themselves.
    pub fn surprising(&self) -> bool {
        !matches!(self, Reason::New | Reason::NewBase)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::New => f.write_str("nothing to continue"),
            Reason::Replaced => f.write_str("file replaced (a rewrite or a rotation)"),
            Reason::NewBase => f.write_str("new base file after a rewrite"),
            Reason::Restored { what } => write!(
                f,
                "{what} is no longer the one persist holds open: the folder was restored or \
                 replaced"
            ),
            Reason::Truncated { part, from, to } => {
                write!(f, "{part} truncated from {from} to {to} bytes")
            }
            Reason::Changed { part, what } => write!(
                f,
                "{part}: {what}; the bytes in the bucket are no longer the file's (truncated \
                 and written again, or written in place)"
            ),
            Reason::ClockBack => f.write_str("the clock went back"),
        }
    }
}

/// What a restarted persist can continue: the newest generation (by number), if it follows
/// this kind of source, and for each part the chain's end and combined CRC-32.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePlan {
    pub generation: GenId,
    /// Part name -> (end, CRC-32 of `[0, end)`). Redis manifests (rewritten, not appended) are
    /// not in it: the next tick uploads the manifest if it differs.
    pub parts: BTreeMap<String, (u64, u32)>,
    /// Per part, the objects its chain is made of (for compaction).
    pub held: BTreeMap<String, Vec<Held>>,
    pub last_time_ms: u64,
}

/// The plan to continue the newest generation of `mode`, or why there is none. Pure.
pub fn resume_plan(gens: &[Generation], mode: Mode) -> std::result::Result<ResumePlan, String> {
    let Some(g) = gens.iter().max_by_key(|g| g.id) else {
        return Err("the prefix holds no chain yet".into());
    };
    if g.id.mode != mode {
        return Err(format!(
            "the newest generation {} is a {} backup, not a {} one",
            g.id.number,
            g.id.mode.as_str(),
            mode.as_str()
        ));
    }
    let mut parts = BTreeMap::new();
    let mut held = BTreeMap::new();
    // Whether a piece's point closed: some closing object, in any part, carries its time.
    let closed = |t: u64| g.objects().any(|o| o.time_ms == t && o.kind.closes());
    for (name, objs) in &g.parts {
        if mode == Mode::AofDir && name.ends_with(".manifest") {
            continue;
        }
        let plan = chain::plan_part(objs, u64::MAX)
            .map_err(|e| format!("generation {} cannot be continued: {e}", g.id.number))?;
        parts.insert(name.clone(), chain::chain_crc(&plan));
        held.insert(name.clone(), held_from_chain(&plan, closed));
    }
    if mode == Mode::File && !parts.contains_key(layout::FILE_PART) {
        return Err(format!("generation {} holds no file", g.id.number));
    }
    Ok(ResumePlan {
        generation: g.id,
        parts,
        held,
        last_time_ms: g.last_time(),
    })
}

/// The generation a follower is writing, and the numbers after it.
pub struct Lifecycle {
    mode: Mode,
    /// The followed path, for log lines.
    source: PathBuf,
    next_number: u64,
    current: Option<GenId>,
}

impl Lifecycle {
    /// `next_number`: above every generation in the bucket.
    pub fn new(mode: Mode, source: &Path, next_number: u64) -> Lifecycle {
        Lifecycle {
            mode,
            source: source.to_path_buf(),
            next_number,
            current: None,
        }
    }

    pub fn current(&self) -> Option<GenId> {
        self.current
    }

    /// Opens every part of `plan` through `open` and checks it still starts with exactly the
    /// bytes of the chain; on success the generation goes on from there. `Ok(Err(why))`: it
    /// cannot be continued (logged by the caller's choice).
    pub fn resume(
        &mut self,
        plan: &ResumePlan,
        mut open: impl FnMut(&str) -> Result<Option<(File, FileId)>>,
    ) -> Result<std::result::Result<BTreeMap<String, Shipped>, String>> {
        let mut held = BTreeMap::new();
        for (name, &(end, crc)) in &plan.parts {
            let Some((file, id)) = open(name)? else {
                return Ok(Err(format!("{name} is gone")));
            };
            let resumed = Shipped::resumed(file, id, end, crc)
                .map_err(|e| crate::error::Error::io("cannot read", &self.source, &e))?;
            match resumed {
                Ok(mut s) => {
                    s.hold(plan.held.get(name).cloned().unwrap_or_default());
                    held.insert(name.clone(), s);
                }
                Err(_) => {
                    return Ok(Err(format!(
                        "{} no longer starts with the {end} bytes of {name} in generation {} \
                         (rewritten or replaced while persist was stopped)",
                        self.source.display(),
                        plan.generation.number
                    )));
                }
            }
        }
        log::info!(
            "resuming generation {} of {} at byte {}",
            plan.generation.number,
            self.source.display(),
            plan.parts.values().map(|(end, _)| end).sum::<u64>()
        );
        self.current = Some(plan.generation);
        Ok(Ok(held))
    }

    /// Starts the next generation at `seen_ms`: numbered after every generation seen, on the
    /// true clock, every held file starting over (generations share no objects). Says why, at
    /// WARN when it is [`Reason::surprising`].
    pub fn start<'a>(
        &mut self,
        s: &mut Session,
        seen_ms: u64,
        held: impl IntoIterator<Item = &'a mut Shipped>,
        reason: &Reason,
        bytes: u64,
    ) -> GenId {
        s.clock.start_generation(seen_ms);
        // A generation of one's own is where two writers would part ways: make sure first.
        if let Some(l) = s.up.lease.as_mut() {
            l.check_next();
        }
        let id = GenId {
            number: self.next_number,
            mode: self.mode,
        };
        self.next_number += 1;
        self.current = Some(id);
        for s in held {
            s.restart();
        }
        let line = format!(
            "starting generation {} of {} ({reason}; {bytes} bytes)",
            id.number,
            self.source.display()
        );
        if reason.surprising() {
            log::warn!("{line}");
        } else {
            log::info!("{line}");
        }
        id
    }

    /// Ends the current generation: uploads what the held files gained since they were last
    /// uploaded, oldest change first, each labelled with its modification time (the moment it
    /// last was the datastore's), except `skip` (a file whose bytes are no longer what was
    /// uploaded: nothing more of it belongs to this generation). `marked`: the Redis
    /// incremental file whose `#TS` marks are points, and the generation's newest point
    /// (see [`Shipped::ship_marked`]).
    pub fn finish<'a>(
        &self,
        s: &mut Session,
        held: impl IntoIterator<Item = (&'a String, &'a mut Shipped)>,
        skip: Option<&str>,
        marked: Option<(&str, u64)>,
    ) -> std::result::Result<(), UploadError> {
        let Some(generation) = self.current else {
            return Ok(());
        };
        let mut tails = Vec::new();
        for (name, shipped) in held {
            if !shipped.in_bucket() || skip == Some(name.as_str()) {
                continue;
            }
            let len = shipped.file.metadata().map_err(UploadError::Read)?.len();
            if len > shipped.uploaded() {
                tails.push((mtime_ms(&shipped.file), name, shipped, len));
            }
        }
        tails.sort_by_key(|(mtime, name, _, _)| (*mtime, name.as_str()));
        // Marks are points only when their file is the one tail: a cut in it, labelled
        // before another file's tail time, would leave that tail out of the point.
        let alone = tails.len() == 1;
        for (_, name, shipped, len) in tails {
            let after = marked
                .filter(|(m, _)| alone && m == name)
                .map(|(_, after)| after);
            shipped.ship_detached(s, generation, name, len, after)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Kind, ObjectKey};

    fn obj(g: u64, mode: Mode, part: &str, start: u64, end: u64, t: u64, crc: u32) -> ObjectKey {
        ObjectKey {
            generation: g,
            mode,
            part: part.into(),
            start,
            end,
            time_ms: t,
            crc,
            kind: if part.ends_with(".manifest") {
                Kind::Snap
            } else {
                Kind::Delta
            },
            seal: crate::layout::Seal::Plain,
            stored: (0, end - start),
            within: None,
        }
    }

    #[test]
    fn plans_the_newest_whole_chain_of_the_right_mode() {
        let data = b"0123456789abcdef";
        let (a, b) = (crc32fast::hash(&data[..10]), crc32fast::hash(&data[10..]));
        let f = Mode::File;
        let gens = chain::generations(vec![
            obj(1, f, "file", 0, 4, 10, 7),
            obj(2, f, "file", 0, 10, 20, a),
            obj(2, f, "file", 10, 16, 30, b),
        ]);
        let p = resume_plan(&gens, f).unwrap();
        assert_eq!(p.generation.number, 2);
        assert_eq!(p.parts["file"], (16, crc32fast::hash(data)));
        assert_eq!(p.last_time_ms, 30);

        // The newest generation is the highest number, whatever its times say (a clock that
        // was ahead while generation 1 was written).
        let skewed = chain::generations(vec![
            obj(1, f, "file", 0, 4, 9_999, 7),
            obj(2, f, "file", 0, 10, 20, a),
        ]);
        assert_eq!(resume_plan(&skewed, f).unwrap().generation.number, 2);

        let gap = chain::generations(vec![
            obj(2, f, "file", 0, 10, 20, 0),
            obj(2, f, "file", 12, 16, 30, 0),
        ]);
        assert!(
            resume_plan(&gap, f)
                .unwrap_err()
                .contains("cannot be continued")
        );
        let dir = chain::generations(vec![
            obj(3, Mode::AofDir, "a.1.base.rdb", 0, 10, 20, 1),
            obj(3, Mode::AofDir, "a.1.incr.aof", 0, 5, 20, 2),
            obj(3, Mode::AofDir, "a.manifest", 0, 80, 20, 3),
        ]);
        assert!(resume_plan(&dir, f).unwrap_err().contains("not a file one"));
        let p = resume_plan(&dir, Mode::AofDir).unwrap();
        let names: Vec<&str> = p.parts.keys().map(String::as_str).collect();
        assert_eq!(names, ["a.1.base.rdb", "a.1.incr.aof"]);
        assert!(resume_plan(&[], f).is_err());
    }

    #[test]
    fn only_routine_reasons_are_quiet() {
        assert!(!Reason::New.surprising());
        assert!(!Reason::NewBase.surprising());
        for r in [
            Reason::Replaced,
            Reason::ClockBack,
            Reason::Restored { what: "x".into() },
            Reason::Truncated {
                part: "file".into(),
                from: 9,
                to: 2,
            },
            Reason::Changed {
                part: "file".into(),
                what: "y".into(),
            },
        ] {
            assert!(r.surprising(), "{r}");
        }
    }
}
