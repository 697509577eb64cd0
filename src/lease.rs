//! One writer per prefix. `persist` holds the object `<root>writer.lease` while it runs: it names
//! the host, the boot (the kernel's boot id), the process (pid and start time) and the file. A
//! second `persist` on the same prefix finds it and stops with a clear error instead of
//! interleaving its generations with the first one's. A lease left by a process that died
//! (SIGKILL, power loss) on the same host is taken over on restart, with a WARN: one written
//! during an earlier boot, or whose pid no longer runs, or runs another process (a pid reused
//! after a reboot, even by another petrify). One from another host must be removed by the
//! operator, who alone can know that host is gone.
//!
//! Processes are told apart by host, boot, PID namespace, pid and start time. Two containers
//! sharing a host name (host networking, a rolling update on one node) each see their own pids:
//! a lease written from another PID namespace cannot be judged from here, so it is treated like
//! another host's (status 73, naming the key to delete once that writer is gone for good).
//!
//! Creation uses `If-None-Match: *` (two writers starting at once: one gets 412). For stores
//! that ignore the header, the lease is read before it is written, and read back after; and
//! because two writers can still both read back their own write there, persist checks the lease
//! again ([`Holding`]) before its first upload, before it deletes anything (compaction's
//! leftovers, retention) or starts a generation, and at most every [`RECHECK_EVERY`] while it
//! uploads (never while idle). A lease that is no longer its own stops it with status 73,
//! deleting nothing.

use crate::error::{Error, Exit, Result};
use crate::s3::{ObjectStore, retry};
use crate::timestamp;

/// The lease's key below the root.
pub const LEASE_NAME: &str = "writer.lease";
/// Below the root, the start of the marker key a starting writer waits to see listed (see
/// `tail::listed`); readers skip such keys.
pub const LISTED_MARKER: &str = "writer.listed.";
/// How long a starting writer waits for its marker to be listed before it gives up.
pub const LISTED_WITHIN: std::time::Duration = std::time::Duration::from_secs(120);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub host: String,
    pub pid: u32,
    pub file: String,
    pub since_ms: u64,
    /// Unique per process start, so that reading back tells our write from another's.
    pub id: String,
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`); absent in leases written by
    /// petrify before it kept it.
    pub boot: Option<String>,
    /// The holder's start time, in clock ticks after boot (`/proc/PID/stat`, field 22): with
    /// the boot id, it tells the holder from a later process given the same pid.
    pub started: Option<u64>,
    /// The holder's PID namespace (the inode of `/proc/self/ns/pid`): its pid means something
    /// only inside that namespace.
    pub pidns: Option<String>,
    /// `false` once the store refused the holder's deletions (a key without DeleteObject):
    /// `petrify prune` with a key that may delete then runs beside it.
    pub deletes: bool,
}

/// What the system says of a running process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcInfo {
    pub started: u64,
    pub is_petrify: bool,
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
            boot: boot_id(),
            started: proc_info(pid).map(|p| p.started),
            pidns: pid_namespace(),
            deletes: true,
        }
    }

    pub fn render(&self) -> String {
        let mut s = format!(
            "petrify-writer-lease 1\nhost {}\npid {}\nsince {}\nid {}\n",
            self.host, self.pid, self.since_ms, self.id
        );
        if let Some(b) = &self.boot {
            s.push_str(&format!("boot {b}\n"));
        }
        if let Some(t) = self.started {
            s.push_str(&format!("started {t}\n"));
        }
        if let Some(n) = &self.pidns {
            s.push_str(&format!("pidns {n}\n"));
        }
        if !self.deletes {
            s.push_str("deletes no\n");
        }
        // Last: a file name may hold spaces.
        s.push_str(&format!("file {}\n", self.file));
        s
    }

    pub fn parse(text: &str) -> Option<Lease> {
        let mut lines = text.lines();
        if lines.next()? != "petrify-writer-lease 1" {
            return None;
        }
        let (mut host, mut pid, mut since, mut id, mut file) = (None, None, None, None, None);
        let (mut boot, mut started, mut pidns) = (None, None, None);
        let mut deletes = true;
        for l in lines {
            let (k, v) = l.split_once(' ')?;
            match k {
                "host" => host = Some(v.to_string()),
                "pid" => pid = v.parse().ok(),
                "since" => since = v.parse().ok(),
                "id" => id = Some(v.to_string()),
                "file" => file = Some(v.to_string()),
                "boot" => boot = Some(v.to_string()),
                "started" => started = v.parse().ok(),
                "pidns" => pidns = Some(v.to_string()),
                "deletes" => deletes = v != "no",
                _ => {}
            }
        }
        Some(Lease {
            host: host?,
            pid: pid?,
            file: file?,
            since_ms: since?,
            id: id?,
            boot,
            started,
            pidns,
            deletes,
        })
    }

    fn describe(&self) -> String {
        format!(
            "pid {}{} on host {}, following {} since {}",
            self.pid,
            self.pidns
                .as_ref()
                .map_or(String::new(), |n| format!(" in PID namespace {n}")),
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
    /// Left by a process of this host that no longer runs: the lease, and why it is stale.
    Stale(Lease, String),
    /// Held by a running process here, by another host, or unreadable.
    Held(Option<Lease>),
}

/// `me`: the starting writer's lease (host, boot, pid). `probe`: what runs under a pid now
/// (`None`: nothing, or this very process).
pub fn judge(
    existing: Option<&[u8]>,
    me: &Lease,
    probe: impl Fn(u32) -> Option<ProcInfo>,
) -> Verdict {
    let Some(bytes) = existing else {
        return Verdict::Free;
    };
    let Some(l) = std::str::from_utf8(bytes).ok().and_then(Lease::parse) else {
        return Verdict::Held(None);
    };
    if l.host != me.host {
        return Verdict::Held(Some(l));
    }
    if let (Some(theirs), Some(mine)) = (&l.boot, &me.boot)
        && theirs != mine
    {
        return Verdict::Stale(l, "written before this host last booted".into());
    }
    // A pid from another PID namespace (another container on this host) says nothing here:
    // whether its process runs cannot be seen, so it is held, as another host's would be.
    // (A lease of a petrify that kept no namespace is judged by its pid, as it always was.)
    if l.pidns.is_some() && l.pidns != me.pidns {
        return Verdict::Held(Some(l));
    }
    let running = if l.pid == me.pid { None } else { probe(l.pid) };
    let why = match (running, l.started) {
        (None, _) => format!("pid {} no longer runs", l.pid),
        (Some(now), Some(then)) if now.started != then => {
            format!("pid {} is now another process", l.pid)
        }
        // A lease from a petrify that kept no start time: any petrify under that pid holds it.
        (Some(now), None) if !now.is_petrify => {
            format!("pid {} is now another program", l.pid)
        }
        _ => return Verdict::Held(Some(l)),
    };
    Verdict::Stale(l, why)
}

/// Takes the prefix's lease or fails with a clear error naming the holder.
pub fn acquire(store: &dyn ObjectStore, root: &str, me: &Lease, where_: &str) -> Result<()> {
    let key = format!("{root}{LEASE_NAME}");
    let s3err = |e| Error::s3(&format!("reading the writer lease {LEASE_NAME}"), &e);
    let write_err = |e| Error::s3(&format!("writing the writer lease {LEASE_NAME}"), &e);
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
    match judge(existing.as_deref(), me, proc_info) {
        Verdict::Held(holder) => return Err(held(holder)),
        // A 412 here is a writer that started in the same moment, or our own earlier attempt
        // whose answer was lost: the read-back below tells which.
        Verdict::Free => {
            retry(4, || store.put_if_absent(&key, mine.as_bytes())).map_err(write_err)?;
        }
        Verdict::Stale(old, why) => {
            log::warn!(
                "taking over the writer lease of pid {} on this host ({why}): {}",
                old.pid,
                old.describe()
            );
            retry(4, || {
                let crc = crc32fast::hash(mine.as_bytes());
                store.put(&key, &mut mine.as_bytes(), mine.len() as u64, Some(crc))
            })
            .map_err(write_err)?;
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

/// Whether the prefix's lease is held by a writer that says the store refuses its deletions.
pub fn holder_cannot_delete(store: &dyn ObjectStore, root: &str) -> bool {
    let key = format!("{root}{LEASE_NAME}");
    retry(4, || store.get_small(&key))
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| Lease::parse(&t))
        .is_some_and(|l| !l.deletes)
}

/// How often a running persist makes sure, while it uploads, that the lease is still its own.
pub const RECHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The lease a running persist holds, and when it last made sure of it.
pub struct Holding {
    key: String,
    me: Lease,
    where_: String,
    checked: Option<std::time::Instant>,
}

impl Holding {
    /// The lease `me`, just acquired under `root` (see [`acquire`]); checked again before the
    /// first upload.
    pub fn new(root: &str, me: &Lease, where_: &str) -> Holding {
        Holding {
            key: format!("{root}{LEASE_NAME}"),
            me: me.clone(),
            where_: where_.to_string(),
            checked: None,
        }
    }

    /// Says in the lease that the store refuses this writer's deletions, once it is sure the
    /// lease is still its own; best effort (a prune then finds the lease held, as before).
    pub fn say_cannot_delete(&mut self, store: &dyn ObjectStore) {
        if !self.me.deletes || !matches!(self.confirm(store), Ok(Ok(()))) {
            return;
        }
        let me = Lease {
            deletes: false,
            ..self.me.clone()
        };
        let text = me.render();
        let crc = crc32fast::hash(text.as_bytes());
        match store.put(
            &self.key,
            &mut text.as_bytes(),
            text.len() as u64,
            Some(crc),
        ) {
            Ok(()) => self.me = me,
            Err(e) => log::debug!("could not say in the writer lease that it cannot delete: {e}"),
        }
    }

    /// Whether a check is due before the next upload.
    pub fn due(&self) -> bool {
        self.checked.is_none_or(|t| t.elapsed() >= RECHECK_EVERY)
    }

    /// The next upload checks first (a new generation is about to be written).
    pub fn check_next(&mut self) {
        self.checked = None;
    }

    /// Reads the lease: `Ok(Ok(()))` still ours; `Ok(Err(_))` lost (status 73, saying who holds
    /// it now); `Err(_)`: the store did not answer, nothing is known.
    pub fn confirm(
        &mut self,
        store: &dyn ObjectStore,
    ) -> std::result::Result<Result<()>, crate::s3::S3Error> {
        let now = store.get_small(&self.key)?;
        if now.as_deref() == Some(self.me.render().as_bytes()) {
            self.checked = Some(std::time::Instant::now());
            return Ok(Ok(()));
        }
        let holder = now
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|t| Lease::parse(&t))
            .map_or("nobody: it was deleted".to_string(), |l| l.describe());
        Ok(Err(Error::new(
            Exit::CantCreate,
            format!(
                "the writer lease of {} is no longer this process's (now: {holder}): another \
                 persist took over the prefix; stopping without writing or deleting anything \
                 more. Run one persist per prefix (a store that ignores If-None-Match lets two \
                 started together both believe they hold it; `man petrify`, WRITER LEASE)",
                self.where_
            ),
        )))
    }
}

/// Gives the lease up at a clean stop, if it is still ours. Best effort: a lease left behind
/// is taken over by the next start on this host.
pub fn release(store: &dyn ObjectStore, root: &str, me: &Lease) {
    let key = format!("{root}{LEASE_NAME}");
    // Ours but for `deletes`, which the holder may have rewritten since.
    let ours = |b: &[u8]| {
        std::str::from_utf8(b)
            .ok()
            .and_then(Lease::parse)
            .is_some_and(|l| {
                Lease {
                    deletes: me.deletes,
                    ..l
                } == *me
            })
    };
    match store.get_small(&key) {
        Ok(Some(b)) if ours(&b) => {
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

/// The kernel's id of this boot.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|b| b.trim().to_string())
        .filter(|b| !b.is_empty() && !b.contains(char::is_whitespace))
}

/// This process's PID namespace: the inode number in `/proc/self/ns/pid` (`pid:[4026531836]`).
fn pid_namespace() -> Option<String> {
    let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let link = link.to_str()?;
    let inode = link.strip_prefix("pid:[")?.strip_suffix(']')?;
    inode
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| inode.to_string())
}

/// What runs under `pid` now, if anything.
fn proc_info(pid: u32) -> Option<ProcInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let started = parse_start_time(&stat)?;
    let is_petrify = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("petrify"))
        .unwrap_or(false);
    Some(ProcInfo {
        started,
        is_petrify,
    })
}

/// Field 22 of `/proc/PID/stat`, the start time. The command name (field 2) is in parentheses
/// and may itself hold spaces and parentheses: fields are counted after the last `)`.
fn parse_start_time(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_ascii_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests;
