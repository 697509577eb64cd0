//! Leases judged, taken, checked while running, and given up.

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
        pidns: Some("4026531836".into()),
        deletes: true,
    }
}

#[test]
fn round_trips() {
    let l = lease("db1", 42);
    assert_eq!(Lease::parse(&l.render()), Some(l.clone()));
    let old = Lease {
        boot: None,
        started: None,
        pidns: None,
        ..l.clone()
    };
    assert_eq!(Lease::parse(&old.render()), Some(old));
    let no_deletes = Lease {
        deletes: false,
        ..l.clone()
    };
    assert_eq!(Lease::parse(&no_deletes.render()), Some(no_deletes));
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

/// Two containers on one host (one host name, one boot), each persist pid 1 in its own PID
/// namespace: neither can see whether the other's pid 1 runs, so the lease is held.
#[test]
fn a_lease_from_another_pid_namespace_is_held() {
    let me = Lease {
        pid: 1,
        ..lease("db1", 1)
    };
    let theirs = Lease {
        pidns: Some("4026532999".into()),
        started: Some(3),
        ..lease("db1", 1)
    };
    let v = judge(Some(theirs.render().as_bytes()), &me, |_| None);
    assert!(
        matches!(&v, Verdict::Held(Some(l)) if l.pidns == theirs.pidns),
        "{v:?}"
    );
    // One from an earlier boot is stale wherever it ran.
    let earlier = Lease {
        boot: Some("boot-old".into()),
        ..theirs.clone()
    };
    assert!(matches!(
        judge(Some(earlier.render().as_bytes()), &me, |_| None),
        Verdict::Stale(..)
    ));
    // The same namespace: judged by its pid, as before.
    assert!(matches!(
        judge(Some(lease("db1", 42).render().as_bytes()), &me, |_| None),
        Verdict::Stale(..)
    ));
}

/// A running persist notices a lease that another writer took, and a deleted one.
#[test]
fn holding_notices_a_lease_taken_over() {
    use crate::s3::mem::MemStore;
    let store = MemStore::new();
    let root = "p/petrify-v1/";
    let me = Lease::mine(std::path::Path::new("/x"));
    acquire(&store, root, &me, "s3://b/p/").unwrap();
    let mut h = Holding::new(root, &me, "s3://b/p/");
    assert!(h.due());
    assert!(h.confirm(&store).unwrap().is_ok());
    assert!(!h.due());
    h.check_next();
    assert!(h.due());
    let other = Lease {
        id: "other".into(),
        pid: 4242,
        ..me.clone()
    }
    .render();
    let key = format!("{root}{LEASE_NAME}");
    store
        .put(&key, &mut other.as_bytes(), other.len() as u64, None)
        .unwrap();
    let lost = h.confirm(&store).unwrap().unwrap_err();
    assert_eq!(lost.exit, Exit::CantCreate);
    assert!(lost.message.contains("pid 4242"), "{}", lost.message);
    store.delete(&key).unwrap();
    let gone = h.confirm(&store).unwrap().unwrap_err();
    assert!(gone.message.contains("deleted"), "{}", gone.message);
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
