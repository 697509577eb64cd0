//! The code's shape, checked from its source: data flows one way between the top-level modules
//! (cli -> config -> tail | recover -> chain / layout / manifest / bucket / lease -> s3), with no
//! import circle, and no source file grows past 500 lines. A module is `src/NAME.rs` together
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
    let upper = ["main", "cli", "config", "tail", "recover"];
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
