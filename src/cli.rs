//! The command line, parsed into plain values: which command, and the options as given. One
//! table, [`OPTIONS`], names every option and the commands that take it; the parser accepts
//! exactly those, and a test checks that each is in its command's `--help` and in
//! `man/petrify.1`. Defaults, the environment and checks of the values are [`crate::config`]'s.
//! Nothing here touches the network or the watched file.

use std::ffi::OsString;
use std::path::PathBuf;

use lexopt::prelude::*;

use crate::error::{Error, Exit, Result};

mod help;

pub use help::{
    LIST_HELP, MAIN_HELP, PERSIST_HELP, PRUNE_HELP, RECOVER_HELP, STATUS_HELP, VERIFY_HELP,
};

/// The commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandName {
    Persist,
    Recover,
    List,
    Verify,
    Prune,
    Status,
}

impl CommandName {
    pub const ALL: &[CommandName] = &[
        CommandName::Persist,
        CommandName::Recover,
        CommandName::List,
        CommandName::Verify,
        CommandName::Prune,
        CommandName::Status,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CommandName::Persist => "persist",
            CommandName::Recover => "recover",
            CommandName::List => "list",
            CommandName::Verify => "verify",
            CommandName::Prune => "prune",
            CommandName::Status => "status",
        }
    }

    fn parse(s: &str) -> Option<CommandName> {
        CommandName::ALL.iter().copied().find(|c| c.as_str() == s)
    }

    pub fn help(self) -> &'static str {
        match self {
            CommandName::Persist => PERSIST_HELP,
            CommandName::Recover => RECOVER_HELP,
            CommandName::List => LIST_HELP,
            CommandName::Verify => VERIFY_HELP,
            CommandName::Prune => PRUNE_HELP,
            CommandName::Status => STATUS_HELP,
        }
    }
}

/// One long option.
#[derive(Debug, Clone, Copy)]
pub struct Opt {
    /// Without the leading `--`.
    pub name: &'static str,
    /// Whether it takes a value.
    pub takes_value: bool,
    /// The commands that accept it.
    pub commands: &'static [CommandName],
}

const ALL: &[CommandName] = CommandName::ALL;
const PERSIST: &[CommandName] = &[CommandName::Persist];
const RECOVER: &[CommandName] = &[CommandName::Recover];
const LIST: &[CommandName] = &[CommandName::List];
const VERIFY: &[CommandName] = &[CommandName::Verify];
const READERS: &[CommandName] = &[CommandName::Recover, CommandName::Verify];
const PRUNE: &[CommandName] = &[CommandName::Prune];
const RETAINERS: &[CommandName] = &[CommandName::Persist, CommandName::Prune];
const FILE_COMMANDS: &[CommandName] = &[
    CommandName::Persist,
    CommandName::Recover,
    CommandName::Status,
];
const STATUS: &[CommandName] = &[CommandName::Status];

/// Every option the parser accepts (besides `--help`/`-h` and `--version`/`-V`).
pub const OPTIONS: &[Opt] = &[
    Opt {
        name: "bucket",
        takes_value: true,
        commands: ALL,
    },
    Opt {
        name: "prefix",
        takes_value: true,
        commands: ALL,
    },
    Opt {
        name: "endpoint",
        takes_value: true,
        commands: ALL,
    },
    Opt {
        name: "region",
        takes_value: true,
        commands: ALL,
    },
    Opt {
        name: "path-style",
        takes_value: false,
        commands: ALL,
    },
    Opt {
        name: "file",
        takes_value: true,
        commands: FILE_COMMANDS,
    },
    Opt {
        name: "interval",
        takes_value: true,
        commands: PERSIST,
    },
    Opt {
        name: "at-timestamp",
        takes_value: true,
        commands: READERS,
    },
    Opt {
        name: "force",
        takes_value: false,
        commands: RECOVER,
    },
    Opt {
        name: "if-missing",
        takes_value: false,
        commands: RECOVER,
    },
    Opt {
        name: "parallel",
        takes_value: true,
        commands: READERS,
    },
    Opt {
        name: "deep",
        takes_value: false,
        commands: VERIFY,
    },
    Opt {
        name: "retain",
        takes_value: true,
        commands: RETAINERS,
    },
    Opt {
        name: "dry-run",
        takes_value: false,
        commands: PRUNE,
    },
    Opt {
        name: "compaction",
        takes_value: true,
        commands: PERSIST,
    },
    Opt {
        name: "metrics-file",
        takes_value: true,
        commands: PERSIST,
    },
    Opt {
        name: "heartbeat-url",
        takes_value: true,
        commands: PERSIST,
    },
    Opt {
        name: "max-lag",
        takes_value: true,
        commands: STATUS,
    },
    Opt {
        name: "json",
        takes_value: false,
        commands: STATUS,
    },
    Opt {
        name: "since",
        takes_value: true,
        commands: LIST,
    },
    Opt {
        name: "until",
        takes_value: true,
        commands: LIST,
    },
    Opt {
        name: "last",
        takes_value: true,
        commands: LIST,
    },
];

/// The options as given on the command line, not yet checked or defaulted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    pub file: Option<PathBuf>,
    pub interval: Option<String>,
    pub at_timestamp: Option<String>,
    pub force: bool,
    pub if_missing: bool,
    pub deep: bool,
    pub dry_run: bool,
    pub json: bool,
    pub max_lag: Option<String>,
    pub metrics_file: Option<PathBuf>,
    pub heartbeat_url: Option<String>,
    pub retain: Option<String>,
    pub compaction: Option<String>,
    pub parallel: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub last: Option<String>,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Run(CommandName, Box<Args>),
    /// Help text to print on stdout.
    Help(&'static str),
    Version,
}

/// Parses the arguments after argv[0]. `argv0` picks the command when the binary is invoked as
/// `petrify-persist`, `petrify-recover` or `petrify-list` (the original tool's names).
pub fn parse(argv0: &str, args: Vec<OsString>) -> Result<Parsed> {
    let mut parser = lexopt::Parser::from_args(args);
    let name = std::path::Path::new(argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("petrify");
    let command = match name.strip_prefix("petrify-").and_then(CommandName::parse) {
        Some(c) => c,
        None => match parser.next().map_err(usage)? {
            Some(Long("help") | Short('h')) => return Ok(Parsed::Help(MAIN_HELP)),
            Some(Long("version") | Short('V')) => return Ok(Parsed::Version),
            Some(Value(v)) => {
                let v = v.string().map_err(usage)?;
                CommandName::parse(&v).ok_or_else(|| {
                    usage_msg(format!(
                        "unknown command {v:?}: use persist, recover, list, verify, prune or status"
                    ))
                })?
            }
            Some(other) => {
                return Err(usage_msg(format!(
                    "{} before the command: give persist, recover, list, verify, prune or status first",
                    other.unexpected()
                )));
            }
            None => {
                return Err(usage_msg(
                    "no command given: use persist, recover, list, verify, prune or status (see petrify --help)",
                ));
            }
        },
    };
    let mut a = Args::default();
    while let Some(arg) = parser.next().map_err(usage)? {
        let name = match arg {
            Long("help") | Short('h') => return Ok(Parsed::Help(command.help())),
            Long("version") | Short('V') => return Ok(Parsed::Version),
            Long(name) => name.to_string(),
            other => return Err(not_an_option(command, other.unexpected())),
        };
        let Some(opt) = OPTIONS
            .iter()
            .find(|o| o.name == name && o.commands.contains(&command))
        else {
            return Err(not_an_option(command, Long(&name).unexpected()));
        };
        if !opt.takes_value {
            match opt.name {
                "path-style" => a.path_style = true,
                "force" => a.force = true,
                "if-missing" => a.if_missing = true,
                "deep" => a.deep = true,
                "dry-run" => a.dry_run = true,
                "json" => a.json = true,
                other => return Err(unhandled(other)),
            }
            continue;
        }
        let value = parser.value().map_err(usage)?;
        if opt.name == "file" || opt.name == "metrics-file" {
            if value.is_empty() {
                return Err(usage_msg(format!("--{} is empty", opt.name)));
            }
            match opt.name {
                "file" => a.file = Some(PathBuf::from(value)),
                _ => a.metrics_file = Some(PathBuf::from(value)),
            }
            continue;
        }
        let value = value
            .into_string()
            .map_err(|_| usage_msg(format!("--{} must be valid UTF-8", opt.name)))?;
        let slot = match opt.name {
            "bucket" => &mut a.bucket,
            "prefix" => &mut a.prefix,
            "endpoint" => &mut a.endpoint,
            "region" => &mut a.region,
            "interval" => &mut a.interval,
            "at-timestamp" => &mut a.at_timestamp,
            "parallel" => &mut a.parallel,
            "since" => &mut a.since,
            "until" => &mut a.until,
            "last" => &mut a.last,
            "retain" => &mut a.retain,
            "compaction" => &mut a.compaction,
            "max-lag" => &mut a.max_lag,
            "heartbeat-url" => &mut a.heartbeat_url,
            other => return Err(unhandled(other)),
        };
        *slot = Some(value);
    }
    Ok(Parsed::Run(command, Box::new(a)))
}

fn not_an_option(command: CommandName, what: lexopt::Error) -> Error {
    let c = command.as_str();
    usage_msg(format!(
        "{what}: not an option of petrify {c} (see petrify {c} --help)"
    ))
}

/// An option in [`OPTIONS`] that the parser does not store: a bug, said as one.
fn unhandled(name: &str) -> Error {
    Error::new(Exit::Software, format!("internal: --{name} is not handled"))
}

fn usage(e: lexopt::Error) -> Error {
    usage_msg(e.to_string())
}

pub fn usage_msg(m: impl Into<String>) -> Error {
    Error::new(Exit::Usage, m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(argv0: &str, args: &[&str]) -> Result<Parsed> {
        parse(argv0, args.iter().map(OsString::from).collect())
    }

    #[test]
    fn parses_each_command() {
        let Parsed::Run(c, a) = p(
            "petrify",
            &[
                "persist",
                "--bucket",
                "b",
                "--prefix",
                "p",
                "--file",
                "f",
                "--interval",
                "0.5",
            ],
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(c, CommandName::Persist);
        assert_eq!(a.interval.as_deref(), Some("0.5"));
        assert_eq!(a.bucket.as_deref(), Some("b"));

        let Parsed::Run(c, a) = p(
            "/usr/bin/petrify-recover",
            &[
                "--bucket=b",
                "--prefix",
                "",
                "--file",
                "f",
                "--at-timestamp",
                "1.5",
                "--force",
            ],
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(c, CommandName::Recover);
        assert!(a.force);
        assert_eq!(a.prefix.as_deref(), Some(""));
        assert_eq!(a.at_timestamp.as_deref(), Some("1.5"));

        assert!(matches!(
            p("petrify-list", &["--bucket", "b", "--prefix", "p"]).unwrap(),
            Parsed::Run(CommandName::List, _)
        ));
        assert_eq!(p("petrify", &["--help"]).unwrap(), Parsed::Help(MAIN_HELP));
        assert_eq!(
            p("petrify", &["recover", "--help"]).unwrap(),
            Parsed::Help(RECOVER_HELP)
        );
        assert_eq!(p("petrify", &["-V"]).unwrap(), Parsed::Version);
    }

    #[test]
    fn unknown_commands_and_options_are_usage_errors() {
        for args in [
            &[][..],
            &["frobnicate"],
            &["--bucket", "b"],
            &["persist", "--force"],
            &["list", "--file", "f"],
            &["list", "--frob"],
            &["list", "-x"],
            &["list", "stray"],
            &["recover", "--file"],
            &["recover", "--file", ""],
        ] {
            let e = p("petrify", args).unwrap_err();
            assert_eq!(e.exit, Exit::Usage, "{args:?}");
            assert!(!e.message.is_empty());
        }
    }

    /// One source of truth: every option the parser accepts is in the help of each command
    /// that takes it, and in the man page; and the parser accepts what the table says.
    #[test]
    fn every_option_is_in_the_help_and_the_man_page() {
        let man = include_str!("../man/petrify.1");
        for o in OPTIONS {
            let flag = format!("--{}", o.name);
            let man_flag = format!("Fl \\-{}", o.name.replace('-', "\\-"));
            assert!(man.contains(&man_flag), "{flag} is not in man/petrify.1");
            for c in o.commands {
                assert!(
                    c.help().contains(&flag),
                    "{flag} is not in petrify {} --help",
                    c.as_str()
                );
                let mut args = vec![c.as_str(), flag.as_str()];
                if o.takes_value {
                    args.push("x");
                }
                assert!(
                    matches!(p("petrify", &args), Ok(Parsed::Run(..))),
                    "petrify {args:?} is refused"
                );
            }
        }
    }
}
