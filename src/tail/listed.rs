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

/// Waits until a key written now is listed. `Ok(false)`: a stop was requested meanwhile.
pub fn wait_listed(store: &dyn ObjectStore, root: &str, lease_id: &str) -> Result<bool> {
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
    if let Err(e) = store.delete(&key) {
        log::warn!("could not delete {key} (it is ignored; delete it by hand): {e}");
    }
    match (listed, signal::stop_requested()) {
        (true, _) => Ok(true),
        (false, true) => Ok(false),
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
