//! `petrify status`: health for cron and monitoring, read from the bucket (the truth, not
//! persist's own state) and, given the local file, compared with it: the newest recovery point,
//! its age, whether its chain is whole, and how far the bucket is behind the file.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bucket::{self, Place};
use crate::chain;
use crate::error::{Error, Exit, Hint, Result};
use crate::manifest;
use crate::timestamp::{self, rfc3339_ms, unix};

use crate::s3::ObjectStore;

/// What `petrify status` is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRequest {
    pub place: Place,
    /// The followed file or Redis folder, to compare with.
    pub file: Option<PathBuf>,
    /// Fail (status 75) when the bucket is further behind than this.
    pub max_lag: Option<Duration>,
    pub json: bool,
    /// `--identity`: the age identity file that opens encrypted objects.
    pub identity: Option<std::path::PathBuf>,
}

/// What was found; the lag is 0 when the bucket holds every byte of the local file.
struct Health {
    time_ms: u64,
    generation: u64,
    bytes: u64,
    age_s: f64,
    local: Option<u64>,
    behind_bytes: Option<u64>,
    lag_s: f64,
    broken: Option<String>,
    /// The newest point's reads that are compressed, encrypted, and whether `--identity`
    /// opened the encrypted ones.
    sealed: (usize, usize, bool),
}

pub fn status(req: &StatusRequest, store: &dyn ObjectStore, out: &mut dyn Write) -> Result<()> {
    let root = req.place.root();
    let found = bucket::survey_to_recover(store, &root, None)?;
    let points = chain::recovery_points(&found.generations);
    let Ok(newest) = chain::choose(&points, None) else {
        return Err(Error::new(
            Exit::NoInput,
            format!("no recovery point under {} yet", req.place.describe()),
        )
        .with_hint(Hint::CheckBucketAndPrefix));
    };
    let (_, broken) = chain::check_points(&found.generations, vec![newest]);
    let sealed = sealed_objects(&found.generations, &newest);
    if let Some(file) = &req.identity {
        check_identity(store, &root, &sealed, &crate::seal::Identities::load(file)?)?;
    }
    let now = timestamp::now_ms();
    let age_s = now.saturating_sub(newest.time_ms) as f64 / 1000.0;
    let local = req.file.as_deref().map(local_bytes).transpose()?;
    // A local file smaller than the newest point was replaced or truncated, and none of it is in
    // a newer generation yet: all of it is behind.
    let behind_bytes = local.map(|l| match l < newest.bytes {
        true => l,
        false => l - newest.bytes,
    });
    let lag_s = match behind_bytes {
        Some(0) => 0.0,
        _ => age_s,
    };
    let h = Health {
        time_ms: newest.time_ms,
        generation: newest.generation.number,
        bytes: newest.bytes,
        age_s,
        local,
        behind_bytes,
        lag_s,
        broken: broken.first().map(|b| b.why.to_string()),
        sealed: (
            sealed.iter().filter(|d| d.object.seal.compressed()).count(),
            sealed.iter().filter(|d| d.object.seal.encrypted()).count(),
            req.identity.is_some(),
        ),
    };
    let text = if req.json {
        json(&h, req.max_lag)
    } else {
        human(&h)
    };
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush())
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        return Err(Error::new(
            Exit::Io,
            format!("cannot write the status: {e}"),
        ));
    }
    if let Some(why) = h.broken {
        return Err(Error::new(
            Exit::Data,
            format!("the newest recovery point cannot be recovered: {why}; see petrify verify"),
        ));
    }
    if let Some(max) = req.max_lag
        && h.lag_s > max.as_secs_f64()
    {
        return Err(Error::new(
            Exit::TempFail,
            format!(
                "the bucket is {:.0} s behind{} (more than --max-lag {}): is persist running \
                 and reaching S3?",
                h.lag_s,
                h.behind_bytes
                    .map(|b| format!(", {b} byte(s) of the file not in it"))
                    .unwrap_or_default(),
                max.as_secs()
            ),
        ));
    }
    Ok(())
}

/// The reads of the newest point's chain that are sealed (see [`crate::seal`]).
fn sealed_objects(gens: &[chain::Generation], p: &chain::RecoveryPoint) -> Vec<chain::Download> {
    let Some(g) = gens.iter().find(|g| g.id == p.generation) else {
        return Vec::new();
    };
    g.parts
        .values()
        .filter_map(|objs| chain::plan_part(objs, p.time_ms).ok())
        .flat_map(|plan| chain::downloads(&plan))
        .filter(|d| d.sealed())
        .collect()
}

/// `--identity`: whether it opens every encrypted read of the newest point, from the first
/// bytes of each (its age header): 77 naming the first it does not open, 65 for a header that
/// is damaged.
fn check_identity(
    store: &dyn ObjectStore,
    root: &str,
    sealed: &[chain::Download],
    ids: &crate::seal::Identities,
) -> Result<()> {
    use crate::seal::OpenError;
    use std::io::Read as _;
    for d in sealed.iter().filter(|d| d.object.seal.encrypted()) {
        let (from, to) = (d.stored.0, d.stored.1.min(d.stored.0 + HEADER_READ));
        let got = store
            .get_range(&d.object.key(root), from, to)
            .and_then(|b| {
                let mut head = Vec::new();
                b.reader
                    .take(to - from)
                    .read_to_end(&mut head)
                    .map(|_| head)
                    .map_err(|e| crate::s3::S3Error::Network(e.to_string()))
            })
            .map_err(|e| Error::s3(&format!("reading the header of {}", d.object), &e))?;
        match crate::seal::opens(&got, ids) {
            Ok(()) | Err(OpenError::Read(_)) => {}
            Err(OpenError::WrongIdentity(file)) => {
                return Err(Error::new(
                    Exit::NoPerm,
                    format!(
                        "no identity in {file} opens object {} of the newest point: it was \
                         encrypted to other recipients",
                        d.object
                    ),
                ));
            }
            Err(OpenError::Damaged(why)) => {
                return Err(Error::new(
                    Exit::Data,
                    format!("object {} of the newest point is damaged: {why}", d.object),
                ));
            }
            Err(_) => {}
        }
    }
    Ok(())
}

/// The first bytes of an encrypted object `status --identity` reads: an age header is about 100
/// bytes a recipient.
const HEADER_READ: u64 = 16 << 10;

/// Bytes the local source holds, counted as points count them: a file's length, or a Redis
/// folder's manifest and the files it lists.
fn local_bytes(path: &Path) -> Result<u64> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io("cannot read", path, &e))?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let io_err = |e: io::Error| Error::io("cannot read", path, &e);
    let Some(name) = manifest::find_manifest(path).map_err(io_err)? else {
        return Err(Error::new(
            Exit::NoInput,
            format!("{} holds no Redis manifest", path.display()),
        ));
    };
    let text = manifest::read_small(&path.join(&name)).map_err(io_err)?;
    let entries = manifest::parse_manifest(&text)
        .map_err(|e| Error::new(Exit::Data, format!("{}: {e}", path.join(&name).display())))?;
    let mut total = text.len() as u64;
    for e in manifest::live_files(&entries) {
        total += std::fs::metadata(path.join(&e.name))
            .map_err(|err| Error::io("cannot read", &path.join(&e.name), &err))?
            .len();
    }
    Ok(total)
}

fn human(h: &Health) -> String {
    let mut s = format!(
        "newest point  {} ({}), generation {}, {} bytes, {:.0} s old\n",
        rfc3339_ms(h.time_ms),
        unix(h.time_ms),
        h.generation,
        h.bytes,
        h.age_s
    );
    if let (Some(local), Some(behind)) = (h.local, h.behind_bytes) {
        s += &format!(
            "local         {local} bytes, {behind} not in the bucket, lag {:.0} s\n",
            h.lag_s
        );
    }
    s += &match &h.broken {
        None => "chain         whole\n".to_string(),
        Some(why) => format!("chain         BROKEN: {why}\n"),
    };
    let (compressed, encrypted, checked) = h.sealed;
    if compressed + encrypted > 0 {
        s += &format!(
            "sealed        {compressed} read(s) compressed, {encrypted} encrypted{}\n",
            match (encrypted, checked) {
                (0, _) => "",
                (_, true) => " (--identity opens them)",
                (_, false) => " (give --identity to check that your key opens them)",
            }
        );
    }
    s
}

/// One JSON object on one line; times also as Unix seconds for monitoring systems.
fn json(h: &Health, max_lag: Option<Duration>) -> String {
    let opt = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
    let ok = h.broken.is_none() && max_lag.is_none_or(|m| h.lag_s <= m.as_secs_f64());
    format!(
        "{{\"newest\":\"{}\",\"newest_unix\":{},\"generation\":{},\"bytes\":{},\
         \"age_seconds\":{:.3},\"local_bytes\":{},\"behind_bytes\":{},\"lag_seconds\":{:.3},\
         \"chain\":\"{}\",\"ok\":{ok}}}\n",
        rfc3339_ms(h.time_ms),
        unix(h.time_ms),
        h.generation,
        h.bytes,
        h.age_s,
        opt(h.local),
        opt(h.behind_bytes),
        h.lag_s,
        if h.broken.is_some() {
            "broken"
        } else {
            "whole"
        },
    )
}
