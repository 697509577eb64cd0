//! From the parsed command line and the environment to what each command needs: every default
//! applied here, every value checked here, each message naming the option or variable at
//! fault. Below this layer errors are typed or in plain words; option names live here and in
//! `cli`.

use std::time::Duration;

use crate::bucket::Place;
use crate::cli::{Args, CommandName, DEFAULT_INTERVAL, DEFAULT_PARALLEL, usage_msg};
use crate::doctor::DoctorRequest;
use crate::error::{Error, Exit, Hint, Result};
use crate::list::{ListRequest, Window};
use crate::prune::PruneRequest;
use crate::recover::RecoverRequest;
use crate::s3::StoreConfig;
use crate::status::StatusRequest;
use crate::tail::{PersistRequest, upload};
use crate::timestamp::{self, BadTime};
use crate::verify::{Load, VerifyRequest};

mod credentials;
mod store;

pub use store::store_error;
use store::{server_side, store_config};

/// A command, ready to run, and the store it runs against.
#[derive(Debug)]
pub struct Command {
    pub run: Run,
    pub store: StoreConfig,
    /// `--bucket-time`: read the bucket as it was then (Unix milliseconds).
    pub as_of: Option<u64>,
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    Persist(PersistRequest),
    Recover(RecoverRequest),
    List(ListRequest),
    Verify(VerifyRequest),
    Prune(PruneRequest),
    Status(StatusRequest),
    Doctor(DoctorRequest),
}

/// Resolves `args` for `command` against the environment (`env`).
pub fn resolve(
    command: CommandName,
    args: Args,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Command> {
    let c = command.as_str();
    let bucket = args
        .bucket
        .ok_or_else(|| usage_msg(format!("petrify {c} needs --bucket")))?;
    if bucket.is_empty() {
        return Err(usage_msg("--bucket is empty"));
    }
    // The prefix may be empty (the bucket's top level) but must be given, so that nobody writes
    // to the top of a shared bucket by forgetting it.
    let prefix = args.prefix.ok_or_else(|| {
        usage_msg(format!(
            "petrify {c} needs --prefix (use --prefix '' for the top of the bucket)"
        ))
    })?;
    check_prefix(&prefix)?;
    let place = Place { bucket, prefix };
    let need_file = || usage_msg(format!("petrify {c} needs --file"));
    let interval = match &args.interval {
        Some(v) => parse_interval(v)?,
        None => DEFAULT_INTERVAL,
    };
    // The command's own options first: a usage error beats a missing credential.
    let run = match command {
        CommandName::Persist => Run::Persist(PersistRequest {
            place: place.clone(),
            file: args.file.ok_or_else(need_file)?,
            interval,
            max_object: max_object(&env)?,
            retain: match args.retain.as_deref().map(parse_age).transpose()? {
                // A replaced file is followed for 5 intervals after its last write; a window
                // shorter than that could drop its generation while late bytes still come.
                Some(keep) if keep < interval * 10 => {
                    return Err(usage_msg(format!(
                        "--retain must be at least 10 intervals ({} s)",
                        (interval * 10).as_secs_f64()
                    )));
                }
                keep => keep,
            },
            compaction: crate::compaction::Spans::choose(args.compaction.as_deref(), interval)
                .map_err(usage_msg)?,
            metrics_file: args.metrics_file,
            heartbeat_url: match args.heartbeat_url {
                Some(u) if !(u.starts_with("https://") || u.starts_with("http://")) => {
                    // Not echoed: such URLs carry a secret token.
                    return Err(usage_msg(
                        "--heartbeat-url must start with https:// or http://",
                    ));
                }
                u => u,
            },
            sealer: sealer(
                args.compress.as_deref(),
                &args.encrypt_to,
                args.encrypt_to_file.as_deref(),
            )?,
        }),
        CommandName::Recover => Run::Recover(RecoverRequest {
            place: place.clone(),
            file: args.file.ok_or_else(need_file)?,
            at_ms: args
                .at_timestamp
                .as_deref()
                .map(|s| parse_time("at-timestamp", s))
                .transpose()?,
            force: args.force,
            if_missing: match (args.if_missing, args.force) {
                (true, true) => {
                    return Err(usage_msg(
                        "--if-missing and --force contradict each other: --if-missing never \
                         replaces anything",
                    ));
                }
                (m, _) => m,
            },
            parallel: match &args.parallel {
                Some(v) => parse_parallel(v)?,
                None => DEFAULT_PARALLEL,
            },
            identity: args.identity.clone(),
        }),
        CommandName::Verify => Run::Verify(VerifyRequest {
            place: place.clone(),
            at_ms: args
                .at_timestamp
                .as_deref()
                .map(|s| parse_time("at-timestamp", s))
                .transpose()?,
            deep: args.deep,
            parallel: match &args.parallel {
                Some(v) => parse_parallel(v)?,
                None => DEFAULT_PARALLEL,
            },
            load: match (args.load, args.server) {
                (true, server) => Some(Load { server }),
                (false, Some(_)) => {
                    return Err(Error::new(
                        Exit::Usage,
                        "--server names what --load runs: give --load too",
                    ));
                }
                (false, None) => None,
            },
            identity: args.identity.clone(),
        }),
        CommandName::Status => Run::Status(StatusRequest {
            place: place.clone(),
            file: args.file,
            max_lag: args
                .max_lag
                .as_deref()
                .map(|v| parse_seconds("max-lag", v))
                .transpose()?,
            json: args.json,
            identity: args.identity.clone(),
        }),
        CommandName::Prune => Run::Prune(PruneRequest {
            place: place.clone(),
            retain: parse_age(args.retain.as_deref().ok_or_else(|| {
                usage_msg("petrify prune needs --retain (example: --retain 30d)")
            })?)?,
            dry_run: args.dry_run,
        }),
        CommandName::Doctor => Run::Doctor(DoctorRequest {
            place: place.clone(),
            json: args.json,
        }),
        CommandName::List => Run::List(ListRequest {
            place: place.clone(),
            window: window(&args.since, &args.until, &args.last)?,
        }),
    };
    let server_side = server_side(
        (args.storage_class, args.sse, args.sse_kms_key_id),
        (args.lock_days, args.lock_mode),
    )?;
    let mut store = store_config(
        &place.bucket,
        args.endpoint,
        args.region,
        args.path_style,
        env,
    )?;
    store.server_side = server_side;
    let as_of = args
        .bucket_time
        .as_deref()
        .map(|t| parse_time("bucket-time", t))
        .transpose()?;
    Ok(Command { run, store, as_of })
}

/// Prefixes are limited to what every store keeps as written: S3's "safe characters" (some
/// stores decode `+` and `%` in listings differently from how they were written), and no empty,
/// `.` or `..` segment and no leading `/` (stores and proxies fold `a//b` into `a/b` and strip
/// a leading slash; the keys then listed are not the ones written, and list and recover find
/// nothing). One trailing `/` is allowed: `a/b/` is `a/b`.
fn check_prefix(p: &str) -> Result<()> {
    let safe = |c: char| c.is_ascii_alphanumeric() || "!-_.*'()/".contains(c);
    if let Some(c) = p.chars().find(|c| !safe(*c)) {
        return Err(usage_msg(format!(
            "--prefix {p:?} contains {c:?}: use letters, digits, / and ! - _ . * ' ( ) only"
        )));
    }
    if p.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(usage_msg(format!(
            "--prefix {p:?} has a . or .. segment: name the folder plainly"
        )));
    }
    if p.starts_with('/') {
        return Err(usage_msg(format!(
            "--prefix {p:?} starts with /: some stores drop it, so write it without ({:?})",
            p.trim_start_matches('/')
        )));
    }
    let inner = p.strip_suffix('/').unwrap_or(p);
    if !inner.is_empty() && inner.split('/').any(str::is_empty) {
        return Err(usage_msg(format!(
            "--prefix {p:?} has an empty segment (//): some stores fold it into one /, so \
             write it that way"
        )));
    }
    if p.len() > 512 {
        return Err(usage_msg("--prefix is longer than 512 characters"));
    }
    Ok(())
}

/// A whole number of seconds given to `--NAME`.
fn parse_seconds(name: &str, v: &str) -> Result<Duration> {
    v.parse::<u64>()
        .ok()
        .filter(|n| *n <= 100 * 365 * 86_400)
        .map(Duration::from_secs)
        .ok_or_else(|| usage_msg(format!("--{name} {v:?} is not a whole number of seconds")))
}

/// `--retain AGE`: a whole number and a unit (s, m, h, d), at least one second; a unit is
/// required, so that nobody keeps 30 seconds meaning 30 days.
fn parse_age(s: &str) -> Result<Duration> {
    let bad = || {
        usage_msg(format!(
            "--retain {s:?} is not an age: give a number and a unit, s, m, h or d (90s, 36h, 30d)"
        ))
    };
    let unit = match s.chars().last() {
        Some('s') => 1,
        Some('m') => 60,
        Some('h') => 3600,
        Some('d') => 86_400,
        _ => return Err(bad()),
    };
    let n: u64 = s[..s.len() - 1].parse().map_err(|_| bad())?;
    match n.checked_mul(unit) {
        Some(secs) if (1..=100 * 365 * 86_400).contains(&secs) => Ok(Duration::from_secs(secs)),
        _ => Err(bad()),
    }
}

/// `list --since/--until/--last`.
fn window(since: &Option<String>, until: &Option<String>, last: &Option<String>) -> Result<Window> {
    let w = Window {
        since_ms: since
            .as_deref()
            .map(|s| parse_time("since", s))
            .transpose()?,
        until_ms: until
            .as_deref()
            .map(|s| parse_time("until", s))
            .transpose()?,
        last: match last {
            None => None,
            Some(v) => Some(v.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                usage_msg(format!(
                    "--last {v:?} is not a number of points (1 or more)"
                ))
            })?),
        },
    };
    if let (Some(s), Some(u)) = (w.since_ms, w.until_ms)
        && s > u
    {
        return Err(usage_msg(
            "--since is after --until: no point can be in that window",
        ));
    }
    Ok(w)
}

fn parse_interval(s: &str) -> Result<Duration> {
    let secs: f64 = s.trim().parse().map_err(|_| {
        usage_msg(format!(
            "--interval {s:?} is not a number of seconds (example: 1 or 0.5)"
        ))
    })?;
    if !secs.is_finite() || !(0.01..=86_400.0).contains(&secs) {
        return Err(usage_msg(format!(
            "--interval {s} is out of range: give 0.01 to 86400 seconds"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `--compress`, `--encrypt-to` and `--encrypt-to-file`: how persist seals what it stores.
fn sealer(
    compress: Option<&str>,
    to: &[String],
    to_file: Option<&std::path::Path>,
) -> Result<crate::seal::Sealer> {
    let level = match compress {
        Some(c) => crate::seal::parse_compress(c).map_err(usage_msg)?,
        None => Some(crate::seal::DEFAULT_LEVEL),
    };
    let mut recipients = to
        .iter()
        .map(|r| crate::seal::parse_recipient(r))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(usage_msg)?;
    if let Some(f) = to_file {
        recipients.extend(crate::seal::read_recipients(f).map_err(usage_msg)?);
    }
    Ok(crate::seal::Sealer { level, recipients })
}

fn parse_parallel(s: &str) -> Result<usize> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=256).contains(&n) => Ok(n),
        _ => Err(usage_msg(format!(
            "--parallel {s:?}: give a number of requests in flight from 1 to 256"
        ))),
    }
}

/// A time given to `--NAME`.
fn parse_time(name: &str, s: &str) -> Result<u64> {
    timestamp::parse(s).map_err(|e| {
        usage_msg(match e {
            BadTime::NotATime => format!(
                "--{name} {s:?} is not a time: give RFC 3339 (2026-11-25T21:04:05Z) or \
                 Unix seconds (1764104645), as `petrify list` prints them"
            ),
            BadTime::BeforeEpoch => format!("--{name} {s:?} is before 1970"),
        })
    })
}

/// `PETRIFY_MAX_OBJECT_BYTES`: the largest object persist uploads (default [`upload::DEFAULT_MAX_OBJECT`], at least
/// 1 MiB, at most 5 GiB: S3's limit for one PUT).
fn max_object(env: impl Fn(&str) -> Option<String>) -> Result<u64> {
    let Some(v) = env("PETRIFY_MAX_OBJECT_BYTES").filter(|v| !v.is_empty()) else {
        return Ok(upload::DEFAULT_MAX_OBJECT);
    };
    match v.trim().parse::<u64>() {
        Ok(n) if ((1 << 20)..=(5 << 30)).contains(&n) => Ok(n),
        _ => Err(Error::new(
            Exit::Config,
            format!(
                "PETRIFY_MAX_OBJECT_BYTES={v:?}: give a number of bytes from 1048576 to 5368709120"
            ),
        )),
    }
}

/// An error as the operator reads it: its message, and its hint in terms of the options.
pub fn describe(e: &Error) -> String {
    let hint = match &e.hint {
        None => return e.message.clone(),
        Some(Hint::UseRegion(r)) => {
            &format!("give --region {r} (and, if you give --endpoint, one in that region)")
        }
        Some(Hint::CheckBucketAndPrefix) => "check --bucket and --prefix",
        Some(Hint::CheckBucket) => "check --bucket, or create the bucket",
        Some(Hint::GiveForce) => "or give --force to replace it",
        Some(Hint::GiveLaterTime) => "give a later --at-timestamp",
    };
    let sep = if e.hint == Some(Hint::GiveForce) {
        ", "
    } else {
        ": "
    };
    format!("{}{sep}{hint}", e.message)
}

#[cfg(test)]
mod tests;
