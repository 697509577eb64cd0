//! The listing a persist starts from is at least as new as its writer lease. A store that
//! lists new keys late (`petrify doctor`'s "listed at once") would otherwise show a restarted
//! persist the bucket as it was some seconds earlier: without the newest objects (harmless:
//! their bytes are uploaded again), or without the newest generation, whose number persist
//! would then take again for other bytes. So, holding the lease, persist writes a marker key
//! and lists until the marker shows, taking keys to show in the order they were written, then
//! deletes it. On a store that lists at once, this costs one PUT, one LIST and one DELETE per
//! start, and nothing while running (persist's own writes need no listing).

use std::time::{Duration, Instant};

use crate::error::{Error, Exit, Result};
use crate::lease::{LISTED_MARKER, LISTED_WITHIN as WAIT_AT_MOST};
use crate::s3::{ObjectStore, retry};
use crate::signal;

/// How the start went.
pub struct Listed {
    /// A stop was requested while waiting.
    pub stopped: bool,
    /// The store refused to delete the marker as not permitted (a key without
    /// `s3:DeleteObject`): the first deletion persist tries, so it knows at once.
    pub cannot_delete: Option<String>,
}

/// Waits until a key written now is listed.
pub fn wait_listed(store: &dyn ObjectStore, root: &str, lease_id: &str) -> Result<Listed> {
    let key = format!("{root}{LISTED_MARKER}{lease_id}");
    let s3err = |what: &str| {
        let what = what.to_string();
        move |e| Error::s3(&what, &e)
    };
    // Like the lease, in the store's default class: it lives for a moment.
    retry(4, || store.put_if_absent(&key, b"")).map_err(s3err(&format!("writing {key}")))?;
    let started = Instant::now();
    let mut pause = Duration::from_millis(250);
    let mut said = false;
    let listed = loop {
        let found = store.list(&key).map_err(s3err(&format!("listing {key}")))?;
        if found.iter().any(|l| l.key == key) {
            break true;
        }
        let waited = started.elapsed();
        if waited >= WAIT_AT_MOST || signal::stop_requested() {
            break false;
        }
        if !said {
            log::info!(
                "the store does not list a new key at once: waiting for its listing to show \
                 what was written before this start"
            );
            said = true;
        }
        signal::sleep_until(Instant::now() + pause);
        pause = (pause * 2).min(Duration::from_secs(2));
    };
    if said && listed {
        log::info!("listed after {:.1}s", started.elapsed().as_secs_f64());
    }
    let mut cannot_delete = None;
    match store.delete(&key) {
        Ok(()) => {}
        Err(e) if e.status() == Some(403) => cannot_delete = Some(e.to_string()),
        Err(e) => log::warn!("could not delete {key} (it is ignored; delete it by hand): {e}"),
    }
    let stopped = signal::stop_requested();
    match (listed, stopped) {
        (true, _) | (false, true) => Ok(Listed {
            stopped: !listed,
            cannot_delete,
        }),
        (false, false) => Err(Error::new(
            Exit::Unavailable,
            format!(
                "the store has not listed a key written {}s ago: persist cannot know what the \
                 bucket holds, and does not start (petrify doctor checks the store)",
                WAIT_AT_MOST.as_secs()
            ),
        )),
    }
}
