//! One writer per prefix. `persist` holds the object `<root>writer.lease` while it runs: it names
//! the host, process and file. A second `persist` on the same prefix finds it and stops with a
//! clear error instead of interleaving its generations with the first one's. A lease left by a
//! process that died (SIGKILL, power loss) on the same host is taken over on restart; one from
//! another host must be removed by the operator, who alone can know that host is gone.
//!
//! Creation uses `If-None-Match: *` (two writers starting at once: one gets 412). For stores
//! that ignore the header, the lease is read before it is written, and read back after.

use crate::error::{Error, Exit, Result};
use crate::s3::{Store, retry};
use crate::timestamp;

/// The lease's key below the root.
pub const LEASE_NAME: &str = "writer.lease";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub host: String,
    pub pid: u32,
    pub file: String,
    pub since_ms: u64,
    /// Unique per process start, so that reading back tells our write from another's.
    pub id: String,
}

impl Lease {
    pub fn mine(file: &std::path::Path) -> Lease {
        let since_ms = timestamp::now_ms();
        let pid = std::process::id();
        Lease {
            host: hostname(),
            pid,
            file: file.display().to_string(),
            since_ms,
            id: format!("{since_ms:x}-{pid:x}"),
        }
    }

    pub fn render(&self) -> String {
        format!(
            "petrify-writer-lease 1\nhost {}\npid {}\nsince {}\nid {}\nfile {}\n",
            self.host, self.pid, self.since_ms, self.id, self.file
        )
    }

    pub fn parse(text: &str) -> Option<Lease> {
        let mut lines = text.lines();
        if lines.next()? != "petrify-writer-lease 1" {
            return None;
        }
        let (mut host, mut pid, mut since, mut id, mut file) = (None, None, None, None, None);
        for l in lines {
            let (k, v) = l.split_once(' ')?;
            match k {
                "host" => host = Some(v.to_string()),
                "pid" => pid = v.parse().ok(),
                "since" => since = v.parse().ok(),
                "id" => id = Some(v.to_string()),
                "file" => file = Some(v.to_string()),
                _ => {}
            }
        }
        Some(Lease {
            host: host?,
            pid: pid?,
            file: file?,
            since_ms: since?,
            id: id?,
        })
    }

    fn describe(&self) -> String {
        format!(
            "pid {} on host {}, following {} since {}",
            self.pid,
            self.host,
            self.file,
            timestamp::rfc3339_ms(self.since_ms)
        )
    }
}

/// What an existing lease means for a starting writer. Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Free,
    /// Left by a process on this host that no longer runs.
    Stale(Lease),
    /// Held by a running process here, by another host, or unreadable.
    Held(Option<Lease>),
}

pub fn judge(existing: Option<&[u8]>, my_host: &str, alive: impl Fn(u32) -> bool) -> Verdict {
    let Some(bytes) = existing else {
        return Verdict::Free;
    };
    match std::str::from_utf8(bytes).ok().and_then(Lease::parse) {
        Some(l) if l.host == my_host && !alive(l.pid) => Verdict::Stale(l),
        other => Verdict::Held(other),
    }
}

/// Takes the prefix's lease or fails with a clear error naming the holder.
pub fn acquire(store: &Store, root: &str, me: &Lease, where_: &str) -> Result<()> {
    let key = format!("{root}{LEASE_NAME}");
    let s3err = |e| Error::s3(&format!("reading the writer lease {LEASE_NAME}"), &e);
    let held = |holder: Option<Lease>| {
        Error::new(
            Exit::CantCreate,
            format!(
                "another petrify persist writes to {where_} ({}): stop it first; if it is gone \
                 for good, delete {where_}{LEASE_NAME}",
                holder.map_or("an unreadable lease".to_string(), |l| l.describe())
            ),
        )
    };
    let get = || retry(4, || store.get_small(&key)).map_err(s3err);
    let existing = get()?;
    let mine = me.render();
    match judge(existing.as_deref(), &me.host, process_alive) {
        Verdict::Held(holder) => return Err(held(holder)),
        // A 412 here is a writer that started in the same moment, or our own earlier attempt
        // whose answer was lost: the read-back below tells which.
        Verdict::Free => {
            retry(4, || store.put_if_absent(&key, mine.as_bytes())).map_err(s3err)?;
        }
        Verdict::Stale(old) => {
            log::info!(
                "taking over the writer lease of pid {} (no longer running on this host)",
                old.pid
            );
            retry(4, || {
                store.put(&key, &mut mine.as_bytes(), mine.len() as u64)
            })
            .map_err(s3err)?;
        }
    }
    // Read back: on a store that ignores If-None-Match, a writer that started at the same
    // moment may have overwritten ours.
    let now = get()?;
    if now.as_deref() != Some(mine.as_bytes()) {
        let holder = now
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|t| Lease::parse(&t));
        return Err(held(holder));
    }
    Ok(())
}

/// Gives the lease up at a clean stop, if it is still ours. Best effort: a lease left behind
/// is taken over by the next start on this host.
pub fn release(store: &Store, root: &str, me: &Lease) {
    let key = format!("{root}{LEASE_NAME}");
    match store.get_small(&key) {
        Ok(Some(b)) if b == me.render().as_bytes() => {
            if let Err(e) = store.delete(&key) {
                log::warn!("could not remove the writer lease: {e}");
            }
        }
        Ok(_) => log::warn!("the writer lease is no longer ours; leaving it"),
        Err(e) => log::warn!("could not check the writer lease: {e}"),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty() && !h.contains('\n'))
        .unwrap_or_else(|| "unknown-host".into())
}

/// Whether `pid` is a running petrify (not just any process that reused the number).
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return false;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("petrify"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(host: &str, pid: u32) -> Lease {
        Lease {
            host: host.into(),
            pid,
            file: "/var/lib/redis/appendonlydir".into(),
            since_ms: 1_764_104_645_000,
            id: "abc-1".into(),
        }
    }

    #[test]
    fn round_trips() {
        let l = lease("db1", 42);
        assert_eq!(Lease::parse(&l.render()), Some(l));
        assert_eq!(Lease::parse("garbage"), None);
    }

    #[test]
    fn judges_leases() {
        let here = lease("db1", 42).render();
        let there = lease("db2", 42).render();
        assert_eq!(judge(None, "db1", |_| true), Verdict::Free);
        assert!(matches!(
            judge(Some(here.as_bytes()), "db1", |_| false),
            Verdict::Stale(_)
        ));
        assert!(matches!(
            judge(Some(here.as_bytes()), "db1", |_| true),
            Verdict::Held(Some(_))
        ));
        // Another host's process cannot be checked: held.
        assert!(matches!(
            judge(Some(there.as_bytes()), "db1", |_| false),
            Verdict::Held(Some(_))
        ));
        assert_eq!(
            judge(Some(b"\xff junk"), "db1", |_| false),
            Verdict::Held(None)
        );
    }
}
