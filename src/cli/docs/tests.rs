//! The committed man page and README say what the table renders.

use super::*;

/// Replaces what lies between the line holding `begin` and the line holding `end` in `text`.
fn between(text: &str, begin: &str, end: &str, with: &str) -> String {
    let b = text
        .find(begin)
        .unwrap_or_else(|| panic!("no {begin:?} marker"));
    let inside = b + text[b..].find('\n').map_or(text.len() - b, |j| j + 1);
    let e = inside
        + text[inside..]
            .find(end)
            .unwrap_or_else(|| panic!("no {end:?} marker"));
    let end_line = text[..e].rfind('\n').map_or(0, |j| j + 1);
    format!("{}{with}{}", &text[..inside], &text[end_line..])
}

fn check(path: &str, rendered: &str) {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    let committed = std::fs::read_to_string(&full).unwrap();
    if std::env::var_os("PETRIFY_BLESS").is_some() {
        std::fs::write(&full, rendered).unwrap();
        return;
    }
    assert!(
        committed == rendered,
        "{path} is not what src/cli/options.rs renders: run PETRIFY_BLESS=1 cargo test, and \
         read the diff"
    );
}

#[test]
fn the_man_page_and_readme_are_rendered_from_the_options() {
    let man_path = "man/petrify.1";
    let man =
        std::fs::read_to_string(format!("{}/{man_path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let man = between(
        &man,
        ".\\\" BEGIN synopsis",
        ".\\\" END synopsis",
        &man_synopsis(),
    );
    let man = between(
        &man,
        ".\\\" BEGIN options",
        ".\\\" END options",
        &man_options(),
    );
    let man = between(
        &man,
        ".\\\" BEGIN numbers",
        ".\\\" END numbers",
        &man_numbers(),
    );
    check(man_path, &man);
    let readme =
        std::fs::read_to_string(format!("{}/README.md", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let readme = between(
        &readme,
        "<!-- BEGIN usage",
        "<!-- END usage",
        &format!("```\n{}```\n", readme_usage()),
    );
    check("README.md", &readme);
}

#[test]
fn every_command_has_its_own_man_entry() {
    let man = include_str!("../../../man/petrify.1");
    for c in CommandName::ALL {
        let entry = format!("\n.It Cm {}\n", c.as_str());
        assert!(
            man.contains(&entry),
            "no entry of its own for {}",
            c.as_str()
        );
    }
}

#[test]
fn help_shows_each_option_with_its_default() {
    let persist = command_help(CommandName::Persist);
    assert!(persist.contains("--interval SECONDS"), "{persist}");
    assert!(persist.contains("(default 1)"), "{persist}");
    assert!(
        persist.contains(crate::compaction::DEFAULT_SPANS),
        "{persist}"
    );
    assert!(!persist.contains("--deep"), "{persist}");
    let recover = command_help(CommandName::Recover);
    assert!(recover.starts_with("petrify recover --bucket B --prefix P --file PATH"));
    assert!(recover.contains("[--force | --if-missing]"), "{recover}");
    assert!(main_help().contains("--path-style"));
}
