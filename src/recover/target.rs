//! The target of a recovery: the path checked before anything is downloaded, a hidden
//! temporary name beside it, and the move into place once every byte is proven, synced so that
//! it survives a crash. The target is either the complete recovery point or untouched.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Exit, Hint, Result};

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
                format!("{} does not name a file", path.display()),
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
                format!("{} exists: move it away", path.display()),
            )
            .with_hint(Hint::GiveForce));
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
