//! One run of persist, as the followers see it: how bytes become objects (the [`Uploader`]),
//! and what the run carries from one look to the next besides each followed file's own
//! progress: point times, the compaction spans, and the keys merges replaced. The polling
//! loop's own state (following, failing, stopping) is [`super::Phase`].

use crate::compaction::Spans;
use crate::error::Result;

use super::clock::Clock;
use super::held::Doomed;
use super::upload::Uploader;

pub struct Session<'a> {
    pub up: Uploader<'a>,
    /// Point times: never back, never two points at one time.
    pub clock: Clock,
    /// `--compaction`: `None` when off.
    pub compaction: Option<Spans>,
    /// Objects replaced by merged ones, to delete.
    pub doomed: Doomed,
}

impl Session<'_> {
    /// Deletes the objects compaction replaced, when due, once the lease is confirmed.
    pub fn delete_replaced(&mut self, now: bool) -> Result<()> {
        if self.doomed.due(now)
            && self.up.sure_of_lease()?
            && self.doomed.flush(self.up.store, now)
            && let Some(l) = self.up.lease.as_mut()
        {
            l.say_cannot_delete(self.up.store);
        }
        Ok(())
    }
}
