//! What a tick of the folder follower does, decided from what it saw: pure, so that every
//! case (a first look, a rewrite, a crash's truncation, a change, a restore, the clock) is a
//! unit test.

use std::time::Duration;

use crate::tail::clock::ClockCheck;
use crate::tail::generation::Reason;

/// What one tick saw of the folder, reduced to what decides the next step.
#[derive(Debug, Clone, Default)]
pub struct DirSeen {
    /// Whether a generation is under way.
    pub started: bool,
    /// A restart decided by an earlier look (the files were reopened since).
    pub restart: Option<Reason>,
    /// A held file, or the folder, that its path no longer names.
    pub replaced: Option<String>,
    /// A file shorter than what was uploaded of it: (name, uploaded, length now).
    pub shrank: Option<(String, u64, u64)>,
    /// A file whose uploaded bytes differ: (name, what differs).
    pub changed: Option<(String, String)>,
    /// The manifest names another base file than the generation's.
    pub base_changed: bool,
    /// Whether anything (a file's growth, the manifest) is not in the bucket yet.
    pub news: bool,
    pub clock: Option<ClockCheck>,
}

/// What a tick does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirStep {
    Idle,
    /// Upload every file's growth, then the manifest.
    Upload,
    /// The clock is just behind the last point's time: wait, then look again.
    Wait(Duration),
    /// Files held open are no longer the folder's: finish with them, reopen everything, and
    /// start a new generation for this reason.
    Reopen(Reason),
    /// Finish the generation and start the next.
    Start(Reason),
}

/// Decides the next step for the folder. Pure.
pub fn decide(s: &DirSeen) -> DirStep {
    if let Some(what) = &s.replaced {
        return DirStep::Reopen(Reason::Restored { what: what.clone() });
    }
    if let Some(r) = &s.restart {
        return DirStep::Start(r.clone());
    }
    if !s.started {
        return DirStep::Start(Reason::New);
    }
    if let Some((part, from, to)) = &s.shrank {
        return DirStep::Start(Reason::Truncated {
            part: part.clone(),
            from: *from,
            to: *to,
        });
    }
    if let Some((part, what)) = &s.changed {
        return DirStep::Start(Reason::Changed {
            part: part.clone(),
            what: what.clone(),
        });
    }
    if s.base_changed {
        return DirStep::Start(Reason::NewBase);
    }
    if !s.news {
        return DirStep::Idle; // no request
    }
    match s.clock {
        None | Some(ClockCheck::Ok) => DirStep::Upload,
        Some(ClockCheck::Wait(d)) => DirStep::Wait(d),
        Some(ClockCheck::SteppedBack(_)) => DirStep::Start(Reason::ClockBack),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen() -> DirSeen {
        DirSeen {
            started: true,
            news: true,
            clock: Some(ClockCheck::Ok),
            ..DirSeen::default()
        }
    }

    #[test]
    fn decides_what_a_folder_calls_for() {
        assert_eq!(decide(&seen()), DirStep::Upload);
        let idle = DirSeen {
            news: false,
            ..seen()
        };
        assert_eq!(decide(&idle), DirStep::Idle);
        let first = DirSeen {
            started: false,
            ..seen()
        };
        assert_eq!(decide(&first), DirStep::Start(Reason::New));
        let rewrite = DirSeen {
            base_changed: true,
            ..seen()
        };
        assert_eq!(decide(&rewrite), DirStep::Start(Reason::NewBase));
        let crashed = DirSeen {
            shrank: Some(("a.incr.aof".into(), 90, 40)),
            base_changed: true,
            ..seen()
        };
        assert!(matches!(
            decide(&crashed),
            DirStep::Start(Reason::Truncated {
                from: 90,
                to: 40,
                ..
            })
        ));
        let changed = DirSeen {
            changed: Some(("a.incr.aof".into(), "bytes 0..64 differ".into())),
            ..seen()
        };
        assert!(matches!(
            decide(&changed),
            DirStep::Start(Reason::Changed { .. })
        ));
    }

    #[test]
    fn a_restored_folder_is_reopened_then_restarted() {
        let restored = DirSeen {
            replaced: Some("appendonly.aof.1.incr.aof".into()),
            changed: Some(("x".into(), "y".into())),
            ..seen()
        };
        let DirStep::Reopen(reason) = decide(&restored) else {
            panic!("{:?}", decide(&restored))
        };
        let after = DirSeen {
            restart: Some(reason.clone()),
            ..seen()
        };
        assert_eq!(decide(&after), DirStep::Start(reason));
    }

    #[test]
    fn the_clock_matters_only_when_there_is_something_to_label() {
        let mut s = seen();
        s.clock = Some(ClockCheck::Wait(Duration::from_millis(2)));
        assert_eq!(decide(&s), DirStep::Wait(Duration::from_millis(2)));
        s.clock = Some(ClockCheck::SteppedBack(5_000));
        assert_eq!(decide(&s), DirStep::Start(Reason::ClockBack));
        s.news = false;
        assert_eq!(decide(&s), DirStep::Idle);
    }
}
