//! One writer per prefix. `persist` holds the object `<root>writer.lease` while it runs: it names
//! the host, the boot (the kernel's boot id), the process (pid and start time) and the file. A
//! second `persist` on the same prefix finds it and stops with a clear error instead of
//! interleaving its generations with the first one's. A lease left by a process that died
//! (SIGKILL, power loss) on the same host is taken over on restart, with a WARN: one written
//! during an earlier boot, or whose pid no longer runs, or runs another process (a pid reused
//! after a reboot, even by another petrify). One from another host must be removed by the
//! operator, who alone can know that host is gone.
//!
//! Creation uses `If-None-Match: *` (two writers starting at once: one gets 412). For stores
//! that ignore the header, the lease is read before it is written, and read back after.

use crate::error::{Error, Exit, Result};
use crate::s3::{ObjectStore, retry};
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
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`); absent in leases written by
    /// petrify before it kept it.
    pub boot: Option<String>,
    /// The holder's start time, in clock ticks after boot (`/proc/PID/stat`, field 22): with
    /// the boot id, it tells the holder from a later process given the same pid.
    pub started: Option<u64>,
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
        let (mut boot, mut started) = (None, None);
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
            retry(4, || store.put_if_absent(&key, mine.as_bytes())).map_err(s3err)?;
        }
        Verdict::Stale(old, why) => {
            log::warn!(
                "taking over the writer lease of pid {} on this host ({why}): {}",
                old.pid,
                old.describe()
            );
            retry(4, || {
                store.put(&key, &mut mine.as_bytes(), mine.len() as u64, None)
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
pub fn release(store: &dyn ObjectStore, root: &str, me: &Lease) {
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

/// The kernel's id of this boot.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|b| b.trim().to_string())
        .filter(|b| !b.is_empty() && !b.contains(char::is_whitespace))
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
mod tests {
    use super::*;

    fn lease(host: &str, pid: u32) -> Lease {
        Lease {
            host: host.into(),
            pid,
            file: "/var/lib/redis/appendonly dir".into(),
            since_ms: 1_764_104_645_000,
            id: "abc-1".into(),
            boot: Some("boot-a".into()),
            started: Some(500),
        }
    }

    #[test]
    fn round_trips() {
        let l = lease("db1", 42);
        assert_eq!(Lease::parse(&l.render()), Some(l.clone()));
        let old = Lease {
            boot: None,
            started: None,
            ..l
        };
        assert_eq!(Lease::parse(&old.render()), Some(old));
        assert_eq!(Lease::parse("garbage"), None);
    }

    #[test]
    fn judges_leases() {
        let me = Lease {
            pid: 7,
            ..lease("db1", 7)
        };
        let runs = |started, is_petrify| {
            move |_| {
                Some(ProcInfo {
                    started,
                    is_petrify,
                })
            }
        };
        let here = lease("db1", 42).render();
        let there = lease("db2", 42).render();
        let stale = |v: Verdict, why: &str| match v {
            Verdict::Stale(_, w) => assert!(w.contains(why), "{w}"),
            other => panic!("{other:?}"),
        };
        assert_eq!(judge(None, &me, runs(500, true)), Verdict::Free);
        // Its holder still runs: the same process (same start time).
        assert!(matches!(
            judge(Some(here.as_bytes()), &me, runs(500, true)),
            Verdict::Held(Some(_))
        ));
        stale(
            judge(Some(here.as_bytes()), &me, |_| None),
            "no longer runs",
        );
        // The pid was given to another process, even another petrify.
        stale(
            judge(Some(here.as_bytes()), &me, runs(900, true)),
            "another process",
        );
        // Written during an earlier boot: stale whatever runs under that pid now.
        let other_boot = Lease {
            boot: Some("boot-b".into()),
            ..me.clone()
        };
        stale(
            judge(Some(here.as_bytes()), &other_boot, runs(500, true)),
            "booted",
        );
        // A lease from an older petrify (no boot, no start time): any petrify holds it.
        let old = Lease {
            boot: None,
            started: None,
            ..lease("db1", 42)
        }
        .render();
        assert!(matches!(
            judge(Some(old.as_bytes()), &me, runs(1, true)),
            Verdict::Held(Some(_))
        ));
        stale(
            judge(Some(old.as_bytes()), &me, runs(1, false)),
            "another program",
        );
        // Another host's process cannot be checked: held.
        assert!(matches!(
            judge(Some(there.as_bytes()), &me, |_| None),
            Verdict::Held(Some(_))
        ));
        assert_eq!(
            judge(Some(b"\xff junk"), &me, |_| None),
            Verdict::Held(None)
        );
    }

    #[test]
    fn acquires_refuses_a_live_holder_and_releases() {
        use crate::s3::mem::MemStore;
        let store = MemStore::new();
        let root = "p/petrify-v1/";
        let me = Lease::mine(std::path::Path::new("/var/log/app.log"));
        acquire(&store, root, &me, "s3://b/p/petrify-v1/").unwrap();
        let key = format!("{root}{LEASE_NAME}");
        assert_eq!(store.objects()[&key], me.render().as_bytes());
        // Another writer on this host, while this process (alive, same start time) holds it.
        let other = Lease {
            pid: me.pid.wrapping_add(1),
            id: "other".into(),
            ..me.clone()
        };
        let held = Lease {
            pid: std::process::id(),
            ..me.clone()
        };
        let held_here = Lease {
            pid: 1,
            started: proc_info(1).map(|p| p.started),
            ..held
        };
        store
            .put(
                &key,
                &mut held_here.render().as_bytes(),
                held_here.render().len() as u64,
                None,
            )
            .unwrap();
        let e = acquire(&store, root, &other, "s3://b/p/petrify-v1/").unwrap_err();
        assert_eq!(e.exit, Exit::CantCreate);
        assert!(
            e.message.contains("another petrify persist"),
            "{}",
            e.message
        );
        // A lease that is not ours is left alone; ours is removed.
        release(&store, root, &me);
        assert!(store.objects().contains_key(&key));
        store
            .put(
                &key,
                &mut me.render().as_bytes(),
                me.render().len() as u64,
                None,
            )
            .unwrap();
        release(&store, root, &me);
        assert!(store.objects().is_empty());
    }

    #[test]
    fn reads_the_start_time_past_a_hostile_command_name() {
        let stat = "4242 (a) b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 200 18446744073709551615";
        assert_eq!(parse_start_time(stat), Some(987_654));
        assert_eq!(parse_start_time("garbage"), None);
        let mine = proc_info(std::process::id()).unwrap();
        assert!(mine.started > 0);
    }
}
