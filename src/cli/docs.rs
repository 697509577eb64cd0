//! Renders `--help`, the man page's SYNOPSIS and OPTIONS, and the README's Usage block from
//! [`OPTIONS`], so that none of them can drift from what the parser accepts. A test compares
//! the committed man page and README with what this renders; `PETRIFY_BLESS=1 cargo test`
//! writes them (so the man page renderers exist in test builds only: the binary carries no
//! second copy of its man page).

use std::fmt::Write as _;

use super::CommandName;
use super::help::{MAIN_ABOUT, MAIN_TAIL, about};
use super::options::{OPTIONS, Opt};

/// `--name VALUE`.
fn flag(o: &Opt) -> String {
    match o.value {
        Some(v) => format!("--{} {v}", o.name),
        None => format!("--{}", o.name),
    }
}

/// Where usage lines wrap: a terminal of 100 columns shows them whole.
const WIDTH: usize = 96;

/// `petrify COMMAND ...`: required options, then the command's own optional ones, then
/// `[common options]`; wrapped under the first option past [`WIDTH`].
pub fn usage(c: CommandName) -> String {
    let width = CommandName::ALL
        .iter()
        .map(|c| c.as_str().len())
        .max()
        .unwrap_or(0);
    let head = format!("petrify {:width$}", c.as_str());
    let mut words: Vec<String> = Vec::new();
    for o in OPTIONS
        .iter()
        .filter(|o| o.takes(c).is_some_and(|u| u.required))
    {
        words.push(flag(o));
    }
    let partner = |o: &Opt| OPTIONS.iter().any(|p| p.or == Some(o.name));
    for o in OPTIONS
        .iter()
        .filter(|o| !o.common() && !partner(o) && o.takes(c).is_some_and(|u| !u.required))
    {
        words.push(
            match o.or.and_then(|n| OPTIONS.iter().find(|p| p.name == n)) {
                Some(p) => format!("[{} | {}]", flag(o), flag(p)),
                None => format!("[{}]", flag(o)),
            },
        );
    }
    words.push("[common options]".into());
    let mut s = head.clone();
    let mut line = head.len();
    for w in words {
        if line + 1 + w.len() > WIDTH {
            let _ = write!(s, "\n{:width$}", "", width = head.len());
            line = head.len();
        }
        let _ = write!(s, " {w}");
        line += 1 + w.len();
    }
    s
}

/// Option lines for `--help`: the flag, then its help, continuation lines aligned, the
/// default last.
fn option_lines(out: &mut String, rows: &[(&Opt, &str)]) {
    let width = rows.iter().map(|(o, _)| flag(o).len()).max().unwrap_or(0) + 2;
    for (o, help) in rows {
        let mut help = help.to_string();
        if let Some(d) = o.default {
            let _ = write!(help, " (default {})", d());
        }
        for (i, line) in help.lines().enumerate() {
            let head = if i == 0 { flag(o) } else { String::new() };
            let _ = writeln!(out, "  {head:width$}{line}");
        }
    }
}

/// `petrify --help`.
pub fn main_help() -> String {
    let mut s = format!("{MAIN_ABOUT}\n\nUsage:\n");
    for c in CommandName::ALL {
        for line in usage(*c).lines() {
            let _ = writeln!(s, "  {line}");
        }
    }
    s.push_str("  petrify --help | --version | COMMAND --help\n\nCommon options:\n");
    let rows: Vec<(&Opt, &str)> = OPTIONS
        .iter()
        .filter(|o| o.common())
        .filter_map(|o| Some((o, o.takes(CommandName::Persist)?.help)))
        .collect();
    option_lines(&mut s, &rows);
    let _ = writeln!(s, "\n{MAIN_TAIL}");
    s
}

/// `petrify COMMAND --help`.
pub fn command_help(c: CommandName) -> String {
    let mut s = format!("{}\n\n{}\n\n", usage(c), about(c));
    let rows: Vec<(&Opt, &str)> = OPTIONS
        .iter()
        .filter(|o| !o.common())
        .filter_map(|o| Some((o, o.takes(c)?.help)))
        .collect();
    option_lines(&mut s, &rows);
    let common: Vec<String> = OPTIONS
        .iter()
        .filter(|o| o.common())
        .map(|o| format!("--{}", o.name))
        .collect();
    let _ = writeln!(s, "  {}: see petrify --help", common.join(", "));
    s
}

/// An option's name as mdoc writes it.
#[cfg(test)]
fn man_name(name: &str) -> String {
    name.replace('-', "\\-")
}

#[cfg(test)]
fn man_flag(o: &Opt) -> String {
    match o.value {
        Some(v) => format!("Fl \\-{} Ar {v}", man_name(o.name)),
        None => format!("Fl \\-{}", man_name(o.name)),
    }
}

/// The man page's SYNOPSIS lines.
#[cfg(test)]
pub fn man_synopsis() -> String {
    let mut s = String::new();
    for c in CommandName::ALL {
        let _ = writeln!(s, ".Nm\n.Cm {}", c.as_str());
        for o in OPTIONS
            .iter()
            .filter(|o| o.takes(*c).is_some_and(|u| u.required))
        {
            let _ = writeln!(s, ".{}", man_flag(o));
        }
        let partner = |o: &Opt| OPTIONS.iter().any(|p| p.or == Some(o.name));
        for o in OPTIONS
            .iter()
            .filter(|o| !o.common() && !partner(o) && o.takes(*c).is_some_and(|u| !u.required))
        {
            match o.or.and_then(|n| OPTIONS.iter().find(|p| p.name == n)) {
                Some(p) => {
                    let _ = writeln!(s, ".Op {} | \\-{}", man_flag(o), man_name(p.name));
                }
                None => {
                    let _ = writeln!(s, ".Op {}", man_flag(o));
                }
            }
        }
        s.push_str(".Op Ar common options\n");
    }
    s.push_str(".Nm\n.Fl \\-help | \\-version\n.Nm\n.Ar COMMAND\n.Fl \\-help\n");
    s
}

/// The man page's OPTIONS list.
#[cfg(test)]
pub fn man_options() -> String {
    let mut s = String::from(".Bl -tag -width Ds\n");
    for o in OPTIONS {
        let _ = writeln!(s, ".It {}\n{}", man_flag(o), o.man);
        if let Some(d) = o.default {
            let _ = writeln!(s, "Default\n.Li {} .", d());
        }
    }
    s.push_str(".It Fl h , \\-help\nPrint help and exit.\n");
    s.push_str(".It Fl V , \\-version\nPrint the version and exit.\n.El\n");
    s
}

/// The numbers the code owns that the man page's prose names, as roff strings (`.ds range 8
/// MiB`, written `\*[range]` in the text): the prose cannot drift from the constants.
#[cfg(test)]
pub fn man_numbers() -> String {
    use crate::recover::fetch;
    use crate::tail::upload;
    let mib = |b: u64| format!("{} MiB", b >> 20);
    let rows = [
        ("buffer", mib(upload::BUFFER_LIMIT)),
        ("granule", mib(upload::GRANULE)),
        ("pipelined", mib(upload::PIPELINED_OBJECT)),
        (
            "maxobject",
            format!(
                "{} ({} GiB)",
                upload::DEFAULT_MAX_OBJECT,
                upload::DEFAULT_MAX_OBJECT >> 30
            ),
        ),
        ("keepentries", crate::tail::held::KEEP_ENTRIES.to_string()),
        ("partmin", mib(crate::compaction::PART_MIN)),
        ("sendatmost", mib(crate::compaction::SEND_AT_MOST)),
        (
            "listedwithin",
            crate::lease::LISTED_WITHIN.as_secs().to_string(),
        ),
        ("range", mib(fetch::RANGE)),
        ("ranged", fetch::RANGED_AT_ONCE.to_string()),
        ("aheadbytes", mib(fetch::AHEAD_BYTES)),
        ("ahead", fetch::AHEAD.to_string()),
    ];
    rows.iter().map(|(n, v)| format!(".ds {n} {v}\n")).collect()
}

/// The README's Usage block (inside its code fence).
#[cfg(test)]
pub fn readme_usage() -> String {
    let mut s = String::new();
    for c in CommandName::ALL {
        let _ = writeln!(s, "{}", usage(*c));
    }
    s.push_str("petrify --help | --version ; petrify COMMAND --help\n");
    s
}

#[cfg(test)]
mod tests;
