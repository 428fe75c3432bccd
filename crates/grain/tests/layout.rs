//! The house rules of the source tree, checked on the files themselves:
//!
//! - no two files of `crates/grain/src`, `crates/fizzbuzz/src` or
//!   `crates/grain-telemetry/src` import each other, directly or in a loop — except the
//!   one type-level reference from the grain's context to the cluster handle
//!   (`context.rs` → `cluster.rs`, see ARCHITECTURE.md);
//! - no file of the runtime (`crates/grain/src`) is longer than 600 lines, and
//!   `node.rs` (start and shutdown only) at most 300.
//!
//! What counts as an import: a path naming another file's module — `use crate::x::…`,
//! an inline `crate::x::Item`, or `super::x` — from code (comments do not count).
//! A module's own `mod.rs` and its children, and the crate root (`lib.rs`), do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A source file and the module it is.
struct File {
    module: Vec<String>,
    path: PathBuf,
    text: String,
}

fn workspace_crate(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name)
        .join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        panic!("cannot read {}", dir.display());
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            // src/bin holds separate binary crates, not modules of this one.
            if path.file_name().is_some_and(|n| n != "bin") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src` (`remote/mod.rs` → `remote`, `lib.rs` → root).
fn module_of(src: &Path, path: &Path) -> Vec<String> {
    let rel = path.strip_prefix(src).unwrap_or(path);
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts
        .last()
        .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
    {
        parts.pop();
    }
    parts
}

fn files_of(krate: &str) -> Vec<File> {
    let src = workspace_crate(krate);
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    paths
        .into_iter()
        .map(|path| File {
            module: module_of(&src, &path),
            text: std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display())),
            path,
        })
        .collect()
}

/// The text without `//` comments (doc comments included) and string literals.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_str = false;
        let mut prev = '\0';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if in_str {
                if c == '"' && prev != '\\' {
                    in_str = false;
                }
                prev = if prev == '\\' && c == '\\' { '\0' } else { c };
                continue;
            }
            if c == '/' && chars.peek() == Some(&'/') {
                break;
            }
            if c == '"' && prev != '\'' {
                in_str = true;
                prev = c;
                continue;
            }
            out.push(c);
            prev = c;
        }
        out.push('\n');
    }
    out
}

fn ident_at(s: &[u8], mut i: usize) -> (String, usize) {
    let start = i;
    while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_') {
        i += 1;
    }
    (String::from_utf8_lossy(&s[start..i]).into_owned(), i)
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && s[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Parses the path tree starting at `i` (after `crate::` or `super::`): `a::b::C`,
/// `a::{b, c::D}`, … Pushes every full path (as segments after `prefix`).
fn paths_at(s: &[u8], i: usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let i = skip_ws(s, i);
    if s.get(i) == Some(&b'{') {
        let mut j = i + 1;
        loop {
            j = skip_ws(s, j);
            match s.get(j) {
                None => return j,
                Some(b'}') => return j + 1,
                Some(b',') => j += 1,
                Some(_) => {
                    let next = paths_at(s, j, prefix.clone(), out);
                    j = if next == j { j + 1 } else { next };
                }
            }
        }
    }
    let (ident, j) = ident_at(s, i);
    if ident.is_empty() {
        out.push(prefix);
        return i;
    }
    let mut path = prefix;
    path.push(ident);
    if s.get(j..j + 2) == Some(b"::") {
        return paths_at(s, j + 2, path, out);
    }
    out.push(path);
    j
}

/// Every path from `crate::` in `code`, and every `super::` path resolved against
/// `module` (the module `super` is relative to, i.e. where the code sits).
fn referenced_paths(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let s = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let boundary = i == 0 || !(s[i - 1].is_ascii_alphanumeric() || s[i - 1] == b'_');
        if boundary && s[i..].starts_with(b"crate::") {
            i = paths_at(s, i + 7, Vec::new(), &mut out);
        } else if boundary && s[i..].starts_with(b"super::") {
            let parent = module[..module.len().saturating_sub(1)].to_vec();
            i = paths_at(s, i + 7, parent, &mut out);
        } else {
            i += 1;
        }
    }
    out
}

/// The module a path lands in: its longest prefix that is a file's module.
fn target_module(path: &[String], modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains(p))
}

fn is_ancestor(a: &[String], b: &[String]) -> bool {
    a.len() < b.len() && b.starts_with(a)
}

/// The import graph of a crate: module → modules it uses (the exceptions removed).
fn import_graph(files: &[File]) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| f.module.clone()).collect();
    let mut graph = BTreeMap::new();
    for f in files {
        let code = code_only(&f.text);
        // In a file's `mod tests`, `super` is the file's own module.
        let (main, tests) = match code.find("#[cfg(test)]\nmod ") {
            Some(at) => code.split_at(at),
            None => (code.as_str(), ""),
        };
        let mut own_child = f.module.clone();
        own_child.push("tests".into());
        let mut paths = referenced_paths(main, &f.module);
        paths.extend(referenced_paths(tests, &own_child));
        let edges: BTreeSet<Vec<String>> = paths
            .iter()
            .filter_map(|p| target_module(p, &modules))
            .filter(|t| {
                !t.is_empty()
                    && *t != f.module
                    && !is_ancestor(t, &f.module)
                    && !is_ancestor(&f.module, t)
            })
            .collect();
        graph.insert(f.module.clone(), edges);
    }
    graph
}

/// A loop in the graph, as the modules along it, if there is one.
fn find_loop(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Option<Vec<String>> {
    fn visit(
        node: &Vec<String>,
        graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<String>> {
        state.insert(node.clone(), 1);
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        stack[from..].iter().map(|m| m.join("::")).collect();
                    cycle.push(next.join("::"));
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(next, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(node, graph, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

fn module(path: &str) -> Vec<String> {
    path.split("::").map(String::from).collect()
}

#[test]
fn no_two_files_import_each_other_directly_or_in_a_loop() {
    for krate in ["grain", "fizzbuzz", "grain-telemetry"] {
        let files = files_of(krate);
        let mut graph = import_graph(&files);
        if krate == "grain" {
            // The one allowed reference: a grain's context holds the cluster handle.
            let context = module("context");
            let allowed = graph
                .get_mut(&context)
                .is_some_and(|e| e.remove(&module("cluster")));
            assert!(
                allowed,
                "context.rs no longer names the cluster: drop the exception"
            );
        }
        if let Some(cycle) = find_loop(&graph) {
            panic!(
                "crates/{krate}/src: these files import each other in a loop: {}",
                cycle.join(" -> ")
            );
        }
    }
}

#[test]
fn the_loop_finder_sees_a_loop_through_inline_paths_groups_and_super() {
    let file = |module: &str, text: &str| File {
        module: if module.is_empty() {
            Vec::new()
        } else {
            self::module(module)
        },
        path: PathBuf::from(module),
        text: text.to_string(),
    };
    let files = vec![
        file("", "mod a; mod b; mod c;"),
        file("a", "use crate::{x::Y, b::{Z, W}};"),
        file(
            "b",
            "fn f() { let _ = crate::c::thing(); } // crate::a::not_code",
        ),
        file("c", "/// [`crate::a`]\nuse crate::a::Thing;"),
        file(
            "d",
            "use super::e::Q;\n#[cfg(test)]\nmod tests { use super::*; }",
        ),
        file("d::e", "use super::Thing;"),
        file("e", "use crate::d::e::Q;"),
    ];
    let graph = import_graph(&files);
    assert_eq!(graph[&module("a")], BTreeSet::from([module("b")]));
    assert_eq!(graph[&module("b")], BTreeSet::from([module("c")]));
    assert_eq!(graph[&module("c")], BTreeSet::from([module("a")]));
    // `super::e` in d (a top-level file) is the top-level e, not d::e; its tests'
    // `super::*` is d itself; a child naming its own parent does not count.
    assert_eq!(graph[&module("d")], BTreeSet::from([module("e")]));
    assert!(graph[&module("d::e")].is_empty());
    assert_eq!(graph[&module("e")], BTreeSet::from([module("d::e")]));
    assert_eq!(find_loop(&graph).map(|c| c.len()), Some(4));
    let without_abc: BTreeMap<_, _> = graph
        .into_iter()
        .filter(|(m, _)| !["a", "b", "c"].contains(&m.join("::").as_str()))
        .collect();
    assert_eq!(find_loop(&without_abc), None);
}

#[test]
fn no_runtime_file_is_longer_than_600_lines_and_node_rs_at_most_300() {
    for f in files_of("grain") {
        let lines = f.text.lines().count();
        let limit = if f.module == module("node") { 300 } else { 600 };
        assert!(
            lines <= limit,
            "{} has {lines} lines, over its limit of {limit}",
            f.path.display()
        );
    }
}
