//! Every option, defined once: its name, its value, the commands that take it (with the line
//! each command's `--help` shows), its entry in the man page, its default (from the constant
//! the code uses) and where the parser stores it. `--help`, the man page's SYNOPSIS and
//! OPTIONS, and the README's Usage block are rendered from this table (see [`super::docs`]).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use super::{Args, CommandName};

mod seal;
mod store;

/// `--interval` when not given.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// `--parallel` when not given: requests wait on latency, not bandwidth (bench/NOTEBOOK.md,
/// "Tuning recover"); memory stays bounded whatever it is.
pub const DEFAULT_PARALLEL: usize = 64;

/// One long option.
pub struct Opt {
    /// Without the leading `--`.
    pub name: &'static str,
    /// The value's name (`PATH`), or `None` for a switch.
    pub value: Option<&'static str>,
    /// The commands that take it, and what their `--help` says of it.
    pub uses: &'static [Use],
    /// Its entry in man/petrify.1's OPTIONS (mdoc, after the `.It` line).
    #[cfg_attr(not(test), allow(dead_code))]
    pub man: &'static str,
    /// Its default, as the man page and `--help` print it.
    pub default: Option<fn() -> String>,
    /// Shown in the synopsis as one choice with this option (`[--force | --if-missing]`).
    pub or: Option<&'static str>,
    /// Stores the value (`None` for a switch); the error says what is wrong with it.
    pub set: fn(&mut Args, Option<OsString>) -> Result<(), String>,
}

/// Some commands' use of an option.
pub struct Use {
    pub commands: &'static [CommandName],
    /// One or more lines for `--help`.
    pub help: &'static str,
    pub required: bool,
}

impl Opt {
    pub fn takes(&self, c: CommandName) -> Option<&Use> {
        self.uses.iter().find(|u| u.commands.contains(&c))
    }

    /// Taken by every command: listed once, in `petrify --help`.
    pub fn common(&self) -> bool {
        CommandName::ALL.iter().all(|c| self.takes(*c).is_some())
    }
}

use CommandName::{List, Persist, Prune, Recover, Status, Verify};
const ALL: &[CommandName] = CommandName::ALL;

const fn one(commands: &'static [CommandName], help: &'static str) -> Use {
    Use {
        commands,
        help,
        required: false,
    }
}

const fn needed(commands: &'static [CommandName], help: &'static str) -> Use {
    Use {
        commands,
        help,
        required: true,
    }
}

fn text(v: Option<OsString>) -> Result<String, String> {
    v.unwrap_or_default()
        .into_string()
        .map_err(|_| "must be valid UTF-8".to_string())
}

fn path(v: Option<OsString>) -> Result<PathBuf, String> {
    match v.unwrap_or_default() {
        v if v.is_empty() => Err("is empty".into()),
        v => Ok(PathBuf::from(v)),
    }
}

/// What an option has unless it says otherwise.
const BASE: Opt = Opt {
    name: "",
    value: None,
    uses: &[],
    man: "",
    default: None,
    or: None,
    set: |_, _| Ok(()),
};

/// Every option the parser accepts (besides `--help`/`-h` and `--version`/`-V`), in the order
/// the help and the man page show them.
pub const OPTIONS: &[Opt] = &[
    Opt {
        name: "bucket",
        value: Some("B"),
        uses: &[needed(ALL, "the S3 bucket")],
        man: "The S3 bucket.",
        set: |a, v| {
            a.bucket = Some(text(v)?);
            Ok(())
        },
        ..BASE
    },
    Opt {
        name: "prefix",
        value: Some("P"),
        uses: &[needed(
            ALL,
            "where in the bucket the backup lives ('' for the top)",
        )],
        man: include_str!("options/prefix.mdoc"),
        set: |a, v| {
            a.prefix = Some(text(v)?);
            Ok(())
        },
        ..BASE
    },
    Opt {
        name: "file",
        value: Some("PATH"),
        uses: &[
            needed(
                &[Persist],
                "the file or folder to follow (waited for if it does not exist yet)",
            ),
            needed(
                &[Recover],
                "where to write the file (or folder, for a Redis appendonlydir/ backup)",
            ),
            one(&[Status], "the followed file or folder, to compare with"),
        ],
        man: include_str!("options/file.mdoc"),
        set: |a, v| {
            a.file = Some(path(v)?);
            Ok(())
        },
        ..BASE
    },
    Opt {
        name: "interval",
        value: Some("SECONDS"),
        uses: &[one(
            &[Persist],
            "how often to look for new bytes (fractions allowed, >= 0.01)",
        )],
        man: r#"How often persist looks for new bytes: 0.01 to 86400, fractions allowed.
The interval bounds how much a crash of the machine can lose."#,
        default: Some(|| format!("{}", DEFAULT_INTERVAL.as_secs_f64())),
        set: |a, v| {
            a.interval = Some(text(v)?);
            Ok(())
        },
        ..BASE
    },
    Opt {
        name: "retain",
        value: Some("AGE"),
        uses: &[
            one(
                &[Persist],
                "keep the points of the last AGE (90s, 36h, 30d) and the one before;\n\
                 delete what no kept point needs, every tenth of AGE (see petrify prune).\n\
                 Without it, nothing is deleted",
            ),
            needed(
                &[Prune],
                "how far back points are kept: a number and a unit, s, m, h or d\n\
                 (90s, 36h, 30d)",
            ),
        ],
        man: include_str!("options/retain.mdoc"),
        set: |a, v| {
            a.retain = Some(text(v)?);
            Ok(())
        },
        ..BASE
    },
    Opt {
        name: "compaction",
        value: Some("SPANS"),
        uses: &[one(
            &[Persist],
            "merge the objects of each window into one, keeping every point\n\
             (`off` to disable)",
        )],
        man: include_str!("options/compaction.mdoc"),
        default: Some(|| crate::compaction::DEFAULT_SPANS.to_string()),
        set: |a, v| {
            a.compaction = Some(text(v)?);
            Ok(())
        },
        ..BASE
    },
    Opt {
        name: "metrics-file",
        value: Some("PATH"),
        uses: &[one(
            &[Persist],
            "Prometheus text (node_exporter's textfile collector), rewritten\n\
             atomically after each poll",
        )],
        man: include_str!("options/metrics-file.mdoc"),
        set: |a, v| {
            a.metrics_file = Some(path(v)?);
            Ok(())
        },
        ..BASE
    },
    Opt {
        name: "heartbeat-url",
        value: Some("URL"),
        uses: &[one(
            &[Persist],
            "GET it at most once a minute while polls and uploads succeed\n\
             (a dead-man's switch); never logged",
        )],
        man: include_str!("options/heartbeat-url.mdoc"),
        set: |a, v| {
            a.heartbeat_url = Some(text(v)?);
            Ok(())
        },
        ..BASE
    },
    Opt {
        name: "at-timestamp",
        value: Some("TIME"),
        uses: &[
            one(
                &[Recover],
                "RFC 3339 (2026-11-25T21:04:05.123Z) or Unix seconds (1764104645.123)",
            ),
            one(&[Verify], "only the point recover would choose for TIME"),
        ],
        man: include_str!("options/at-timestamp.mdoc"),
        set: |a, v| {
            a.at_timestamp = Some(text(v)?);
            Ok(())
        },
        ..BASE
    },
    Opt {
        name: "force",
        value: None,
        uses: &[one(&[Recover], "replace PATH if it exists")],
        man: r#"Let recover replace an existing
.Ar PATH ."#,
        or: Some("if-missing"),
        set: |a, _| {
            a.force = true;
            Ok(())
        },
        ..BASE
    },
    Opt {
        name: "if-missing",
        value: None,
        uses: &[one(
            &[Recover],
            "for boot: exit 0 doing nothing if PATH exists, or if the prefix holds\n\
             no recovery point yet (a first boot; said at WARN)",
        )],
        man: include_str!("options/if-missing.mdoc"),
        set: |a, _| {
            a.if_missing = true;
            Ok(())
        },
        ..BASE
    },
    Opt {
        name: "since",
        value: Some("TIME"),
        uses: &[one(
            &[List],
            "only points at or after TIME (RFC 3339 or Unix seconds)",
        )],
        man: r#"list: only points at or after
.Ar TIME
(written as for
.Fl \-at\-timestamp ) ."#,
        set: |a, v| {
            a.since = Some(text(v)?);
            Ok(())
        },
        ..BASE
    },
    Opt {
        name: "until",
        value: Some("TIME"),
        uses: &[one(&[List], "only points at or before TIME")],
        man: r#"list: only points at or before
.Ar TIME ."#,
        set: |a, v| {
            a.until = Some(text(v)?);
            Ok(())
        },
        ..BASE
    },
    Opt {
        name: "last",
        value: Some("N"),
        uses: &[one(
            &[List],
            "only the newest N points (of those --since and --until leave)",
        )],
        man: r#"list: only the newest
.Ar N
points (of those
.Fl \-since
and
.Fl \-until
leave), 1 or more."#,
        set: |a, v| {
            a.last = Some(text(v)?);
            Ok(())
        },
        ..BASE
    },
    Opt {
        name: "deep",
        value: None,
        uses: &[one(
            &[Verify],
            "also download every object (in parallel, nothing kept) and check its\n\
             CRC-32, and that each retried upload repeats the bytes it extends",
        )],
        man: "verify: also download every object and check its CRC-32.",
        set: |a, _| {
            a.deep = true;
            Ok(())
        },
        ..BASE
    },
    Opt {
        name: "load",
        value: None,
        uses: &[one(
            &[Verify],
            "also restore the point into a scratch folder and prove the server\n\
             loads it (a restore drill for Redis folders; the newest point\n\
             without --at-timestamp)",
        )],
        man: include_str!("options/load.mdoc"),
        set: |a, _| {
            a.load = true;
            Ok(())
        },
        ..BASE
    },
    Opt {
        name: "server",
        value: Some("PATH"),
        uses: &[one(
            &[Verify],
            "what --load runs: a redis-server or valkey-server binary, or a\n\
             redis-check-aof or valkey-check-aof one (default: the first of\n\
             those four on PATH)",
        )],
        man: "verify: the program the restore drill runs; see \\-\\-load.",
        set: |a, v| {
            a.server = Some(path(v)?);
            Ok(())
        },
        ..BASE
    },
    Opt {
        name: "parallel",
        value: Some("N"),
        uses: &[
            one(
                &[Recover],
                "requests in flight at once (1 to 256); large objects are fetched\n\
                 in ranges, in parallel",
            ),
            one(
                &[Verify],
                "requests in flight at once with --deep (1 to 256)",
            ),
        ],
        man: include_str!("options/parallel.mdoc"),
        default: Some(|| DEFAULT_PARALLEL.to_string()),
        set: |a, v| {
            a.parallel = Some(text(v)?);
            Ok(())
        },
        ..BASE
    },
    Opt {
        name: "dry-run",
        value: None,
        uses: &[one(
            &[Prune],
            "print each object that would go (KEY  BYTES) and the total; delete nothing",
        )],
        man: "prune: print what would be deleted, delete nothing.",
        set: |a, _| {
            a.dry_run = true;
            Ok(())
        },
        ..BASE
    },
    Opt {
        name: "max-lag",
        value: Some("SECONDS"),
        uses: &[one(
            &[Status],
            "the most lag that is healthy (without --file: the newest point's age)",
        )],
        man: "status: the most lag that is healthy, in whole seconds; over it, status 75.",
        set: |a, v| {
            a.max_lag = Some(text(v)?);
            Ok(())
        },
        ..BASE
    },
    Opt {
        name: "json",
        value: None,
        uses: &[one(
            &[Status, CommandName::Doctor],
            "one JSON object on one line instead of text",
        )],
        man: r#"status and doctor: one JSON object on one line; status's fields are
.Pq Li newest , newest_unix , generation , bytes , age_seconds , local_bytes , behind_bytes , lag_seconds , chain , ok ."#,
        set: |a, _| {
            a.json = true;
            Ok(())
        },
        ..BASE
    },
    seal::COMPRESS,
    seal::ENCRYPT_TO,
    seal::ENCRYPT_TO_FILE,
    seal::IDENTITY,
    store::BUCKET_TIME,
    store::STORAGE_CLASS,
    store::SSE,
    store::SSE_KMS_KEY_ID,
    store::LOCK_DAYS,
    store::LOCK_MODE,
    store::ENDPOINT,
    store::REGION,
    store::PATH_STYLE,
];
