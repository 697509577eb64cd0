//! The code's shape, checked from its source: data flows one way between the top-level modules
//! (cli -> config -> tail | recover -> chain / layout / manifest / bucket / lease -> s3), with no
//! import circle between modules nor between files, and no source file grows past 500 lines. A module is `src/NAME.rs` together
//! with everything under `src/NAME/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const LARGEST: usize = 500;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a source file belongs to.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The top-level modules a source file names through `crate::`.
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // use crate::{a, b::c, d};
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let m = module_of(&src, &f);
        // Comments (doc links among them) are not imports.
        let text: String = std::fs::read_to_string(&f)
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .map(|l| format!("{l}\n"))
            .collect();
        let deps = g.entry(m.clone()).or_default();
        deps.extend(imports(&text).into_iter().filter(|d| *d != m));
    }
    g
}

#[test]
fn the_modules_import_each_other_one_way_only() {
    let g = graph();
    // Depth-first search for a cycle, reporting it whole.
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(at) = path.iter().position(|p| p == m) {
            panic!("import cycle: {} -> {m}", path[at..].join(" -> "));
        }
        if done.contains(m) {
            return;
        }
        path.push(m.to_string());
        for d in g.get(m).into_iter().flatten() {
            visit(d, g, path, done);
        }
        path.pop();
        done.insert(m.to_string());
    }
    let mut done = BTreeSet::new();
    for m in g.keys() {
        visit(m, &g, &mut Vec::new(), &mut done);
    }
    // The two sides never reach into each other, and nothing below them reaches up.
    let upper = [
        "main", "cli", "config", "tail", "recover", "list", "verify", "status", "doctor",
    ];
    for (m, deps) in &g {
        for d in deps {
            let crosses = (m == "tail" && d == "recover") || (m == "recover" && d == "tail");
            let reaches_up =
                !upper.contains(&m.as_str()) && m != "props" && upper.contains(&d.as_str());
            assert!(!crosses && !reaches_up, "{m} imports {d}");
        }
    }
    assert!(
        g["tail"].contains("s3") && g["recover"].contains("chain"),
        "{g:?}"
    );
}

#[test]
fn no_source_file_is_longer_than_500_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    for f in files {
        let n = std::fs::read_to_string(&f).unwrap().lines().count();
        assert!(n <= LARGEST, "{} has {n} lines", f.display());
    }
}

/// Every source file as a module path (`tail::upload`; `main.rs` is the crate itself).
fn module_path(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect();
    match parts.as_slice() {
        [m] if m == "main" => String::new(),
        _ => parts.join("::"),
    }
}

/// The module paths a file names: `crate::a::b`, `super::b`, `self::b` (each resolved to the
/// longest known module it starts with), and the child modules it declares.
fn file_imports(me: &str, text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let resolve = |base: Vec<String>, rest: &str, paths: &mut BTreeSet<Vec<String>>| {
        // `a::b::{c, d::e}`: one path per item of a group.
        let mut path = base;
        let mut rest = rest;
        loop {
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let mut p = path.clone();
                    p.extend(item.trim().split("::").map(ident).filter(|s| !s.is_empty()));
                    paths.insert(p);
                }
                return;
            }
            let seg = ident(rest);
            if seg.is_empty() {
                break;
            }
            path.push(seg.clone());
            rest = &rest[seg.len()..];
            match rest.strip_prefix("::") {
                Some(r) => rest = r,
                None => break,
            }
        }
        paths.insert(path);
    };
    let me_parts: Vec<String> = me
        .split("::")
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let mut paths: BTreeSet<Vec<String>> = BTreeSet::new();
    let mut i = 0;
    while i < text.len() {
        let at = &text[i..];
        let before = text[..i].chars().last();
        let boundary = !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
        if boundary && let Some(r) = at.strip_prefix("crate::") {
            resolve(Vec::new(), r, &mut paths);
        } else if boundary && (at.starts_with("super::") || at.starts_with("self::")) {
            let mut base = me_parts.clone();
            let mut r = at;
            if let Some(x) = r.strip_prefix("self::") {
                r = x;
            }
            while let Some(x) = r.strip_prefix("super::") {
                base.pop();
                r = x;
            }
            resolve(base, r, &mut paths);
        } else if boundary && let Some(r) = at.strip_prefix("mod ") {
            let name = ident(r);
            if !name.is_empty() && r[name.len()..].starts_with(';') {
                let mut p = me_parts.clone();
                p.push(name);
                paths.insert(p);
            }
        }
        i += at.chars().next().map_or(1, char::len_utf8);
    }
    for p in paths {
        // The longest known module the path starts with.
        let found = (0..=p.len())
            .rev()
            .map(|n| p[..n].join("::"))
            .find(|m| known.contains(m));
        if let Some(m) = found {
            out.insert(m);
        }
    }
    out
}

/// No import circle between files either (the modules of one folder included). A submodule
/// naming its own parent or an ancestor is not counted: the parent owns the concept the
/// submodule is part of.
#[test]
fn no_two_files_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let known: BTreeSet<String> = files.iter().map(|f| module_path(&src, f)).collect();
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let me = module_path(&src, f);
        let text: String = std::fs::read_to_string(f)
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .map(|l| format!("{l}\n"))
            .collect();
        let ancestor = |m: &str| m.is_empty() || me == m || me.starts_with(&format!("{m}::"));
        let deps = file_imports(&me, &text, &known)
            .into_iter()
            .filter(|d| !ancestor(d))
            .collect();
        g.insert(me, deps);
    }
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|p| p == m) {
            found.push(format!("{} -> {m}", path[at..].join(" -> ")));
            return;
        }
        if done.contains(m) {
            return;
        }
        path.push(m.to_string());
        for d in g.get(m).into_iter().flatten() {
            visit(d, g, path, done, found);
        }
        path.pop();
        done.insert(m.to_string());
    }
    let mut done = BTreeSet::new();
    let mut found = Vec::new();
    for m in g.keys() {
        visit(m, &g, &mut Vec::new(), &mut done, &mut found);
    }
    assert!(
        found.is_empty(),
        "import cycles between files:\n{}",
        found.join("\n")
    );
    // The check sees what it must: a file's imports of its siblings.
    assert!(
        g["tail::compaction"].contains("tail::compaction::body") && g["verify"].contains("chain"),
        "{g:?}"
    );
}
