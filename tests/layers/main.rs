//! The layers hold: a check over the source of both crates, run by `cargo test`.
//!
//! - Nothing under `gateway/src/domain/` imports the HTTP or proxy layers (`crate::api`,
//!   `web`, `pipeline`, `server`, `config`, `cli`) or the HTTP libraries (axum, pingora,
//!   tower, hyper, http): the domain knows nothing of HTTP.
//! - Sibling modules never import each other in a cycle, in either crate (a module and its own
//!   submodules may refer to each other; that is how Rust modules are built).
//!
//! Imports are read from the source text: `crate::a::b` and `super::` paths on lines that are
//! not comments. Good enough for our own code, which names modules that way.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A crate's modules (as `a::b` paths, the root being "") and what each refers to.
struct Crate {
    modules: BTreeSet<String>,
    /// (file's module, referenced path, line number, file)
    refs: Vec<(String, String, usize, PathBuf)>,
    /// (file's module, source text without comment lines, file)
    texts: Vec<(String, String, PathBuf)>,
}

fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn read_crate(src: &Path) -> Crate {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut modules = BTreeSet::new();
    let mut refs = Vec::new();
    let mut texts = Vec::new();
    for file in &files {
        let module = module_of(src, file);
        // A file-level module that is not `mod.rs` still names a module (its parent's child).
        modules.insert(module.clone());
        let text = std::fs::read_to_string(file).unwrap();
        let mut code = String::new();
        for (n, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("//") {
                continue;
            }
            code.push_str(line);
            code.push('\n');
            for path in paths_in(line, &module) {
                refs.push((module.clone(), path, n + 1, file.clone()));
            }
        }
        texts.push((module, code, file.clone()));
    }
    Crate {
        modules,
        refs,
        texts,
    }
}

/// The module paths a line refers to through `crate::` or `super::`, resolved to absolute
/// `a::b::c` form (may include a trailing item name; callers trim to a known module).
fn paths_in(line: &str, module: &str) -> Vec<String> {
    let mut out = Vec::new();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    for start in ["crate::", "super::"] {
        for (at, _) in line.match_indices(start) {
            let before = line[..at].chars().last();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                continue; // the middle of a longer path (`super::super::x`, `self::super`)
            }
            let tail: String = line[at..].chars().take_while(|c| ident(*c)).collect();
            let mut parts: Vec<&str> = module.split("::").filter(|p| !p.is_empty()).collect();
            let mut segs: Vec<&str> = tail.split("::").filter(|s| !s.is_empty()).collect();
            if segs.first() == Some(&"crate") {
                parts.clear();
                segs.remove(0);
            } else {
                // Each leading `super` climbs one module.
                while segs.first() == Some(&"super") {
                    segs.remove(0);
                    parts.pop();
                }
            }
            parts.extend(segs);
            out.push(parts.join("::"));
        }
    }
    out
}

/// The longest known module that `path` starts with.
fn resolve<'a>(modules: &'a BTreeSet<String>, path: &str) -> Option<&'a String> {
    let parts: Vec<&str> = path.split("::").collect();
    (0..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find_map(|candidate| modules.get(&candidate))
}

fn parent(module: &str) -> &str {
    module.rsplit_once("::").map_or("", |(p, _)| p)
}

/// Is `a` equal to or inside `b`?
fn within(a: &str, b: &str) -> bool {
    b.is_empty() || a == b || a.starts_with(&format!("{b}::"))
}

/// Edges between siblings: for a reference from `from` to `to`, the two children of their
/// closest common ancestor that contain them (none when one contains the other).
fn sibling_edge(from: &str, to: &str) -> Option<(String, String)> {
    if within(from, to) || within(to, from) {
        return None;
    }
    let mut common = parent(from).to_owned();
    while !within(to, &common) {
        common = parent(&common).to_owned();
    }
    let child = |m: &str| -> String {
        let rest = if common.is_empty() {
            m
        } else {
            &m[common.len() + 2..]
        };
        let first = rest.split("::").next().unwrap_or(rest);
        if common.is_empty() {
            first.to_owned()
        } else {
            format!("{common}::{first}")
        }
    };
    Some((child(from), child(to)))
}

fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        if let Some(c) = visit(node, edges, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn assert_acyclic(name: &str, src: &Path) {
    let krate = read_crate(src);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut why: BTreeMap<(String, String), String> = BTreeMap::new();
    for (from, path, line, file) in &krate.refs {
        let Some(to) = resolve(&krate.modules, path) else {
            continue;
        };
        if let Some((a, b)) = sibling_edge(from, to) {
            why.entry((a.clone(), b.clone()))
                .or_insert_with(|| format!("{}:{line}", file.display()));
            edges.entry(a).or_default().insert(b);
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        let steps: Vec<String> = cycle
            .windows(2)
            .map(|w| {
                format!(
                    "  {} -> {} ({})",
                    w[0],
                    w[1],
                    why[&(w[0].clone(), w[1].clone())]
                )
            })
            .collect();
        panic!(
            "{name}: modules import each other in a cycle:\n{}",
            steps.join("\n")
        );
    }
}

#[test]
fn the_domain_knows_nothing_of_http_or_the_proxy() {
    let src = workspace().join("gateway/src");
    let krate = read_crate(&src);
    let upper = ["api", "web", "pipeline", "server", "config", "cli"];
    let mut wrong = Vec::new();
    for (from, path, line, file) in &krate.refs {
        if !within(from, "domain") {
            continue;
        }
        let top = path.split("::").next().unwrap_or("");
        if upper.contains(&top) {
            wrong.push(format!("{}:{line}: crate::{path}", file.display()));
        }
    }
    for (module, code, file) in &krate.texts {
        if !within(module, "domain") {
            continue;
        }
        for library in ["axum::", "pingora::", "tower::", "hyper::", "http::"] {
            for (n, line) in code.lines().enumerate() {
                let hit = line.match_indices(library).any(|(at, _)| {
                    !line[..at]
                        .chars()
                        .last()
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                });
                if hit {
                    wrong.push(format!(
                        "{} (code line {}): {library}",
                        file.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "domain modules must not use the HTTP or proxy layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_gateway_has_no_import_cycles() {
    assert_acyclic("gateway", &workspace().join("gateway/src"));
}

#[test]
fn the_backend_has_no_import_cycles() {
    assert_acyclic("backend", &workspace().join("backend/src"));
}

#[test]
fn the_checker_finds_a_cycle_and_a_layer_breach() {
    // A cycle among siblings is found, parent and child references are not cycles.
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, b) in [("x::a", "x::b"), ("x::b", "x::c"), ("x::c", "x::a")] {
        edges.entry(a.into()).or_default().insert(b.into());
    }
    assert!(find_cycle(&edges).is_some());
    assert_eq!(
        sibling_edge("x::a::inner", "x::b::deep"),
        Some(("x::a".into(), "x::b".into()))
    );
    assert_eq!(sibling_edge("x::a::inner", "x::a"), None);
    assert_eq!(
        sibling_edge("api", "domain::orgs"),
        Some(("api".into(), "domain".into()))
    );
    assert_eq!(
        paths_in("use super::super::store::Conn;", "domain::accounts::tests"),
        ["domain::store::Conn"]
    );
    assert_eq!(
        paths_in("use crate::web::Rejection;", "domain::orgs"),
        ["web::Rejection"]
    );
}
