//! `petrify recover` and `petrify list`: from one listing of the prefix, choose a recovery point,
//! plan its chain, download and verify it into a temporary file beside the target, and move it
//! into place only when every byte is proven. The target is either the complete recovery point
//! or untouched.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::chain::{self, ChooseError, Generation, RecoveryPoint};
use crate::cli::{Common, Recover};
use crate::error::{Error, Exit, Result};
use crate::layout::{self, Mode};
use crate::s3::Store;
use crate::timestamp::{rfc3339_ms, unix};
use crate::{bucket, fetch};

/// How many broken points `list` names one by one before summing up the rest.
const BROKEN_SHOWN: usize = 10;

/// `petrify list`: one line per recovery point that can be recovered, in order. Points whose
/// chain is broken (an object deleted by a lifecycle rule or by hand) are not listed: they are
/// named on stderr, and the command fails with status 65 after listing the good ones. Decided
/// from the keys of the one listing: no extra request.
pub fn list(common: &Common, store: &Store, out: &mut dyn Write) -> Result<()> {
    let root = layout::root(&common.prefix);
    let found = bucket::survey(store, &root)?;
    let (points, broken) = chain::check_points(
        &found.generations,
        chain::recovery_points(&found.generations),
    );
    if points.is_empty() && broken.is_empty() {
        log::warn!("no recovery points under s3://{}/{root}", common.bucket);
    }
    let write = |out: &mut dyn Write| -> io::Result<()> {
        for p in &points {
            writeln!(
                out,
                "{}  {}  {}  {}",
                rfc3339_ms(p.time_ms),
                unix(p.time_ms),
                p.generation.number,
                p.bytes
            )?;
        }
        out.flush()
    };
    match write(out) {
        Ok(()) => {}
        // `petrify list | head` is not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(Error::new(Exit::Io, format!("cannot write the list: {e}"))),
    }
    if broken.is_empty() {
        return Ok(());
    }
    for b in broken.iter().take(BROKEN_SHOWN) {
        eprintln!(
            "petrify: point {} ({}, generation {}) cannot be recovered: {}",
            rfc3339_ms(b.point.time_ms),
            unix(b.point.time_ms),
            b.point.generation.number,
            b.why
        );
    }
    if broken.len() > BROKEN_SHOWN {
        eprintln!(
            "petrify: ... and {} more point(s) that cannot be recovered",
            broken.len() - BROKEN_SHOWN
        );
    }
    Err(Error::new(
        Exit::Data,
        format!(
            "{} of {} recovery point(s) under s3://{}/{root} cannot be recovered: objects of \
             their chains are missing from the bucket (a lifecycle rule, or a deletion by hand); \
             the {} listed can",
            broken.len(),
            broken.len() + points.len(),
            common.bucket,
            points.len()
        ),
    ))
}

/// `petrify recover`.
pub fn recover(args: &Recover, store: &Store) -> Result<()> {
    let target = Target::check(&args.file, args.force)?;
    let root = layout::root(&args.common.prefix);
    let found = bucket::survey(store, &root)?;
    let points = chain::recovery_points(&found.generations);
    let where_ = format!("s3://{}/{root}", args.common.bucket);
    let point = chain::choose(&points, args.at_ms).map_err(|e| match e {
        ChooseError::Empty => Error::new(
            Exit::NoInput,
            format!("no recovery point under {where_}: check --bucket and --prefix"),
        ),
        ChooseError::BeforeFirst { earliest } => Error::new(
            Exit::NoInput,
            format!(
                "--at-timestamp is before the earliest recovery point, {} ({})",
                rfc3339_ms(earliest),
                unix(earliest)
            ),
        ),
    })?;
    let Some(generation) = found.generations.iter().find(|g| g.id == point.generation) else {
        return Err(Error::new(
            Exit::Software,
            "internal: chosen generation vanished",
        ));
    };
    log::info!(
        "recovering {} as of {} (generation {}, {} bytes)",
        args.file.display(),
        rfc3339_ms(point.time_ms),
        point.generation.number,
        point.bytes
    );
    match generation.id.mode {
        Mode::File => recover_file(store, &root, generation, &point, &target),
        Mode::AofDir => crate::aofdir::recover_dir(store, &root, generation, &point, &target),
    }
}

fn recover_file(
    store: &Store,
    root: &str,
    g: &Generation,
    point: &RecoveryPoint,
    target: &Target,
) -> Result<()> {
    if target.is_dir {
        return Err(Error::new(
            Exit::CantCreate,
            format!(
                "{} is a folder, but this recovery point is a single file: give a file path",
                target.path.display()
            ),
        ));
    }
    let objects = g
        .parts
        .get(layout::FILE_PART)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let plan = chain::plan_part(objects, point.time_ms).map_err(|e| {
        Error::new(
            Exit::Data,
            format!(
                "generation {} is damaged: {e}; `petrify list` shows the points that can \
                 still be recovered",
                g.id.number
            ),
        )
    })?;
    let tmp = TempPath::new(&target.path, false)?;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp.path)
        .map_err(|e| Error::io("cannot create", &tmp.path, &e))?;
    fetch::fetch_chain(store, root, &plan, &file)?;
    file.sync_all()
        .map_err(|e| Error::io("cannot write", &tmp.path, &e))?;
    drop(file);
    target.install(tmp)?;
    log::info!(
        "recovered {} ({} bytes from {} object(s))",
        target.path.display(),
        plan.last().map(|o| o.end).unwrap_or(0),
        plan.len()
    );
    Ok(())
}

/// The path being recovered to, checked before anything is downloaded.
pub struct Target {
    pub path: PathBuf,
    pub parent: PathBuf,
    pub is_dir: bool,
    pub force: bool,
}

impl Target {
    pub fn check(path: &Path, force: bool) -> Result<Target> {
        let name_ok = path.file_name().is_some_and(|n| n != "." && n != "..");
        if !name_ok {
            return Err(Error::new(
                Exit::Usage,
                format!("--file {} does not name a file", path.display()),
            ));
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            return Err(Error::new(
                Exit::CantCreate,
                format!(
                    "cannot recover to {}: the folder {} does not exist",
                    path.display(),
                    parent.display()
                ),
            ));
        }
        let meta = fs::symlink_metadata(path).ok();
        if meta.is_some() && !force {
            return Err(Error::new(
                Exit::CantCreate,
                format!(
                    "{} exists: move it away, or give --force to replace it",
                    path.display()
                ),
            ));
        }
        Ok(Target {
            path: path.to_path_buf(),
            parent,
            is_dir: meta.is_some_and(|m| m.is_dir()),
            force,
        })
    }

    /// Moves a fully written and synced temporary file or folder into place, then syncs the
    /// folder so that the rename itself survives a crash.
    pub fn install(&self, mut tmp: TempPath) -> Result<()> {
        if self.force {
            if tmp.is_dir && self.path.is_dir() {
                // rename(2) cannot replace a non-empty folder: move the old one aside first,
                // and delete it only once the new one is in place.
                let mut old = TempPath::new(&self.path, true)?;
                old.keep();
                fs::rename(&self.path, &old.path)
                    .map_err(|e| Error::io("cannot move aside", &self.path, &e))?;
                if let Err(e) = fs::rename(&tmp.path, &self.path) {
                    if fs::rename(&old.path, &self.path).is_err() {
                        return Err(Error::new(
                            Exit::Io,
                            format!(
                                "cannot rename the recovered folder into {} ({e}); the old \
                                 folder is kept at {}",
                                self.path.display(),
                                old.path.display()
                            ),
                        ));
                    }
                    return Err(Error::io("cannot rename into", &self.path, &e));
                }
                old.keep = false;
                tmp.keep();
                drop(old); // removes the old folder
            } else {
                fs::rename(&tmp.path, &self.path)
                    .map_err(|e| Error::io("cannot rename into", &self.path, &e))?;
                tmp.keep();
            }
        } else if tmp.is_dir {
            // Fails if something appeared meanwhile (a non-empty folder, or a file).
            if fs::symlink_metadata(&self.path).is_ok() {
                return Err(Error::new(
                    Exit::CantCreate,
                    format!(
                        "{} appeared during the recovery; nothing was replaced",
                        self.path.display()
                    ),
                ));
            }
            fs::rename(&tmp.path, &self.path)
                .map_err(|e| Error::io("cannot rename into", &self.path, &e))?;
            tmp.keep();
        } else {
            // link(2) never replaces: a file that appeared meanwhile is left alone.
            fs::hard_link(&tmp.path, &self.path).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    Error::new(
                        Exit::CantCreate,
                        format!(
                            "{} appeared during the recovery; nothing was replaced",
                            self.path.display()
                        ),
                    )
                } else {
                    Error::io("cannot create", &self.path, &e)
                }
            })?;
            // tmp's drop unlinks the temporary name.
        }
        File::open(&self.parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("cannot sync the folder", &self.parent, &e))
    }
}

/// A hidden temporary name beside the target, removed on drop unless kept.
pub struct TempPath {
    pub path: PathBuf,
    pub is_dir: bool,
    keep: bool,
}

impl TempPath {
    /// Reserves `.<name>.petrify-<pid>-<n>` beside `target`. With `is_dir`, only the name is
    /// reserved; the caller creates the folder.
    pub fn new(target: &Path, is_dir: bool) -> Result<TempPath> {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = target.parent().filter(|p| !p.as_os_str().is_empty());
        for n in 0..1000 {
            let tmp_name = format!(".{name}.petrify-{}-{n}", std::process::id());
            let path = match parent {
                Some(p) => p.join(tmp_name),
                None => PathBuf::from(tmp_name),
            };
            if fs::symlink_metadata(&path).is_err() {
                return Ok(TempPath {
                    path,
                    is_dir,
                    keep: false,
                });
            }
        }
        Err(Error::new(
            Exit::CantCreate,
            format!("no free temporary name beside {}", target.display()),
        ))
    }

    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let _ = if self.is_dir {
            fs::remove_dir_all(&self.path)
        } else {
            fs::remove_file(&self.path)
        };
    }
}
