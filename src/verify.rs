//! `petrify verify`: proves, without writing anything, that every recovery point under a prefix
//! (or the one `--at-timestamp` chooses) can be rebuilt. From the keys of one listing: every key
//! under the layout is one of ours and as long as it says, every point's chain is whole, and
//! objects holding the same range agree. With `--deep`, every object is downloaded (in
//! parallel, nothing kept) and checked against its CRC-32, and each shorter retry of an upload
//! against the start of the longer one.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::Mutex;

use crate::bucket::{self, Place};
use crate::chain::{self, BrokenPoint};
use crate::error::{Error, Exit, Result};
use crate::layout::{Kind, ObjectKey};
use crate::s3::ObjectStore;
use crate::timestamp::{rfc3339_ms, unix};

use crate::recover::{choose_point, fetch};

mod load;
mod same_range;

/// What `petrify verify` is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyRequest {
    pub place: Place,
    /// Only the point `recover --at-timestamp` would choose.
    pub at_ms: Option<u64>,
    /// Download every object and check its CRC-32.
    pub deep: bool,
    /// Requests in flight at once with `deep`.
    pub parallel: usize,
    /// The restore drill (`--load`), run once every check passed.
    pub load: Option<Load>,
    /// `--identity`: the age identity file that opens encrypted objects.
    pub identity: Option<std::path::PathBuf>,
}

/// `--load`: recover the point into a scratch folder and load it (see [`load`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Load {
    /// `--server`: the server or check tool to run; else the first one on `PATH`.
    pub server: Option<std::path::PathBuf>,
}

/// `petrify verify`: prints one line per broken point and per broken object, then a summary;
/// exits 0 only when every point checked can be rebuilt and every object checked is whole.
pub fn verify(req: &VerifyRequest, store: &dyn ObjectStore, out: &mut dyn Write) -> Result<()> {
    let root = req.place.root();
    let identities = match (req.deep || req.load.is_some(), req.identity.as_deref()) {
        (true, Some(f)) => Some(crate::seal::Identities::load(f)?),
        _ => None,
    };
    let mut report = Report::new(out);
    let checked = match req.at_ms {
        Some(t) => one_point(req, store, &root, t, &mut report)?,
        None => every_point(store, &root, &mut report)?,
    };
    let mut bytes = 0;
    if req.deep {
        let (read, found, refused) = deep(
            store,
            &root,
            &checked.objects,
            (req.parallel, identities.as_ref()),
        );
        // No identity, or the wrong one: the bucket may be fine, nothing was checked.
        if let Some(e) = refused {
            return Err(e);
        }
        bytes = read;
        found.iter().for_each(|p| report.problem(p));
    }
    // The drill only on a bucket that checks out: a broken point would fail it anyway, and
    // the lines above say why better.
    let drilled = match (&req.load, report.problems) {
        (Some(l), 0) => {
            let said = load::drill(
                &req.place,
                store,
                req.at_ms,
                (req.parallel, req.identity.as_deref()),
                l.server.as_deref(),
            );
            if let Ok(said) = &said {
                report.line(&format!("LOADED {said}"));
            }
            Some(said)
        }
        (Some(_), _) => {
            log::warn!("--load: no restore drill on a bucket whose checks failed");
            None
        }
        (None, _) => None,
    };
    report.finish()?;
    if let Some(Err(e)) = drilled {
        return Err(e);
    }
    let what = format!(
        "{} of {} recovery point(s) and {} object(s){} under {}",
        checked.good,
        checked.good + checked.broken,
        checked.objects.len(),
        match req.deep {
            true => format!(" ({bytes} bytes read and checked)"),
            false => String::new(),
        },
        req.place.describe()
    );
    if report.problems == 0 {
        log::info!("verified: {what} can be rebuilt");
        return Ok(());
    }
    Err(Error::new(
        Exit::Data,
        format!(
            "{} problem(s) found (listed above); checked {what}; `petrify list` shows the \
             points that can still be recovered",
            report.problems
        ),
    ))
}

/// The problems, written as they are found (a broken month is millions of lines, never
/// held), and counted.
struct Report<'a> {
    out: io::BufWriter<&'a mut dyn Write>,
    problems: usize,
    failed: Option<io::Error>,
}

impl<'a> Report<'a> {
    fn new(out: &'a mut dyn Write) -> Report<'a> {
        Report {
            out: io::BufWriter::with_capacity(64 * 1024, out),
            problems: 0,
            failed: None,
        }
    }

    fn problem(&mut self, p: &str) {
        self.problems += 1;
        if self.failed.is_none()
            && let Err(e) = writeln!(self.out, "BROKEN {p}")
        {
            self.failed = Some(e);
        }
    }

    fn point(&mut self, b: &BrokenPoint) {
        self.problem(&format!(
            "point {} ({}, generation {}): {}",
            rfc3339_ms(b.point.time_ms),
            unix(b.point.time_ms),
            b.point.generation.number,
            b.why
        ));
    }

    /// A line that is not a problem (the drill's result).
    fn line(&mut self, s: &str) {
        if self.failed.is_none()
            && let Err(e) = writeln!(self.out, "{s}")
        {
            self.failed = Some(e);
        }
    }

    /// `verify | head` is not an error; a full disk is.
    fn finish(&mut self) -> Result<()> {
        if self.failed.is_none()
            && let Err(e) = self.out.flush()
        {
            self.failed = Some(e);
        }
        match self.failed.take() {
            Some(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Error::new(
                Exit::Io,
                format!("cannot write the report: {e}"),
            )),
            _ => Ok(()),
        }
    }
}

/// What was checked: points good and broken, and the objects they stand on (each once; a
/// merged one for all the points it holds, whose CRCs were checked against its own when its
/// index was read).
struct Checked {
    good: usize,
    broken: usize,
    objects: Vec<ObjectKey>,
}

/// Every point under the prefix, walked as [`chain::walk`] streams them.
fn every_point(store: &dyn ObjectStore, root: &str, report: &mut Report) -> Result<Checked> {
    let found = bucket::survey_stored(store, root, root)?;
    // A generation marked as being deleted is no longer history: a prune cut short, that the
    // next prune finishes.
    if found.dropping > 0 {
        log::info!(
            "{} generation(s) marked as being deleted by a prune cut short: not checked; the \
             next prune (or persist --retain) finishes them",
            found.dropping
        );
    }
    for (key, why) in &found.foreign {
        report.problem(&format!(
            "object {key}: not a readable Petrify object ({why})"
        ));
    }
    let (mut good, mut broken) = (0, 0);
    for g in &found.generations {
        chain::walk(g.id, &g.view(), |p, why| match why {
            None => good += 1,
            Some(why) => {
                broken += 1;
                report.point(&BrokenPoint {
                    point: p,
                    why: why.clone(),
                });
            }
        });
    }
    for g in &found.generations {
        for (part, p) in &g.parts {
            for d in same_range::stored(part, g.id.number, p) {
                report.problem(&d);
            }
        }
    }
    report_damaged(report, &found.damaged);
    Ok(Checked {
        good,
        broken,
        objects: sorted(found.generations.iter().flat_map(|g| g.holders()).cloned()),
    })
}

/// The point `recover --at-timestamp` would choose, on the view recover plans on.
fn one_point(
    req: &VerifyRequest,
    store: &dyn ObjectStore,
    root: &str,
    at_ms: u64,
    report: &mut Report,
) -> Result<Checked> {
    let found = bucket::survey_to_recover(store, root, Some(at_ms))?;
    for (key, why) in &found.foreign {
        report.problem(&format!(
            "object {key}: not a readable Petrify object ({why})"
        ));
    }
    let all = chain::recovery_points(&found.generations);
    let point = choose_point(&all, Some(at_ms), &req.place)?;
    let (good, broken) = chain::check_points(&found.generations, vec![point]);
    broken.iter().for_each(|b| report.point(b));
    let mut objects = Vec::new();
    if let Some(g) = found.generations.iter().find(|g| g.id == point.generation) {
        for (part, objs) in &g.parts {
            let objs = chain::plan_part(objs, point.time_ms).unwrap_or_default();
            for d in same_range::planned(part, g.id.number, &objs) {
                report.problem(&d);
            }
            objects.extend(objs.iter().map(|o| o.holder().clone()));
        }
    }
    report_damaged(report, &found.damaged);
    Ok(Checked {
        good: good.len(),
        broken: broken.len(),
        objects: sorted(objects.into_iter()),
    })
}

fn report_damaged(report: &mut Report, damaged: &[(ObjectKey, String)]) {
    for (k, why) in damaged {
        report.problem(&format!(
            "object {k}: a merged object whose index is damaged: {why}"
        ));
    }
}

fn sorted(objects: impl Iterator<Item = ObjectKey>) -> Vec<ObjectKey> {
    let mut objects: Vec<ObjectKey> = objects.collect();
    objects.sort_by(|a, b| {
        (a.generation, a.mode, &a.part, a.start, a.end, a.time_ms).cmp(&(
            b.generation,
            b.mode,
            &b.part,
            b.start,
            b.end,
            b.time_ms,
        ))
    });
    objects.dedup();
    objects
}

/// Downloads every object with at most `parallel` in flight: each must match its key's length
/// and CRC-32, and a delta that starts where a longer one of the same part does must equal the
/// longer one's first bytes. Returns the bytes read and the problems.
fn deep(
    store: &dyn ObjectStore,
    root: &str,
    objects: &[ObjectKey],
    (parallel, identities): (usize, Option<&crate::seal::Identities>),
) -> (u64, Vec<String>, Option<Error>) {
    // Deltas by where they start in their part: a shorter one must be the longer's first bytes.
    type Start<'a> = (u64, crate::layout::Mode, &'a str, u64);
    let mut starting: BTreeMap<Start, Vec<&ObjectKey>> = BTreeMap::new();
    for o in objects.iter().filter(|o| o.kind != Kind::Snap) {
        starting
            .entry((o.generation, o.mode, &o.part, o.start))
            .or_default()
            .push(o);
    }
    let shorter = |o: &ObjectKey| -> Vec<&ObjectKey> {
        match o.kind {
            Kind::Delta | Kind::Merged | Kind::Piece => starting
                .get(&(o.generation, o.mode, o.part.as_str(), o.start))
                .map(|v| v.iter().copied().filter(|s| s.end < o.end).collect())
                .unwrap_or_default(),
            Kind::Snap => Vec::new(),
        }
    };
    // For each object, the lengths at which shorter deltas starting with it end.
    let marks: Vec<Vec<u64>> = objects
        .iter()
        .map(|o| {
            let mut m: Vec<u64> = shorter(o).iter().map(|s| s.len()).collect();
            m.sort_unstable();
            m.dedup();
            m
        })
        .collect();
    let next = Mutex::new(0usize);
    // Per object (by index): the CRC-32 at each mark, or what is wrong with it.
    type Found = Vec<(usize, std::result::Result<Vec<u32>, Error>)>;
    let found: Mutex<Found> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..parallel.max(1).min(objects.len()) {
            scope.spawn(|| {
                loop {
                    let i = {
                        let Ok(mut n) = next.lock() else { return };
                        *n += 1;
                        *n - 1
                    };
                    let Some(o) = objects.get(i) else { return };
                    let r = fetch::crc_marks(store, root, o, &marks[i], identities)
                        .map_err(Error::from);
                    if let Ok(mut f) = found.lock() {
                        f.push((i, r));
                    }
                }
            });
        }
    });
    let mut results = found.into_inner().unwrap_or_default();
    results.sort_by_key(|(i, _)| *i);
    let mut bytes = 0;
    let mut problems = Vec::new();
    let mut refused = None;
    for (i, r) in results {
        let o = &objects[i];
        match r {
            Err(e) if matches!(e.exit, Exit::Usage | Exit::NoPerm) => {
                refused.get_or_insert(e);
            }
            Err(e) => problems.push(e.message),
            Ok(crcs) => {
                bytes += o.len();
                for (len, crc) in marks[i].iter().zip(crcs) {
                    for s in shorter(o)
                        .iter()
                        .filter(|s| s.len() == *len && s.crc != crc)
                    {
                        problems.push(format!(
                            "objects {s} and {o} disagree: the first {len} bytes differ (a \
                             retried upload must repeat the bytes it extends)"
                        ));
                    }
                }
            }
        }
    }
    (bytes, problems, refused)
}
