//! Keeps the crate's module graph acyclic: a module may use another only if
//! that one does not, directly or through others, use it back. Cycles are
//! how "one struct every file takes" grows back; this test names the first
//! one it finds. Edges are read from `crate::` and `super::` paths in code
//! (comments and `#[cfg(test)]` parts left out); a module's own ancestors
//! are not counted, since a parent declares its children.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`ingress::http`, `crate` for lib.rs) -> source text.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src").with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            let name = match parts.as_slice() {
                [only] if only == "lib" => "crate".to_owned(),
                [only] if only == "main" => continue,
                _ => parts.join("::"),
            };
            found.insert(name, std::fs::read_to_string(&path).expect("read module"));
        }
    }
    found
}

/// The code of `source` that ships: no comment lines, nothing after the
/// first `#[cfg(test)]`.
fn shipped_code(source: &str) -> String {
    let code = source.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// The paths after each `prefix` in `code` (`crate::a::b::C` -> `a::b::C`).
fn paths_after<'a>(code: &'a str, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    code.match_indices(prefix).filter_map(move |(at, _)| {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            return None;
        }
        let rest = &code[at + prefix.len()..];
        let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
        Some(rest[..end].trim_end_matches(':'))
    })
}

/// The longest module that `path` starts with.
fn module_of(path: &str, known: &BTreeMap<String, String>) -> Option<String> {
    let segments: Vec<&str> = path.split("::").collect();
    (1..=segments.len()).rev().map(|n| segments[..n].join("::")).find(|m| known.contains_key(m))
}

/// Module -> the modules it uses.
fn edges(known: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    for (name, source) in known {
        let code = shipped_code(source);
        let mut parent: Vec<&str> = if name == "crate" { vec![] } else { name.split("::").collect() };
        // `super` of `a::b` is `a`, whether it is a/b.rs or a/b/mod.rs.
        parent.pop();
        let targets = paths_after(&code, "crate::")
            .map(str::to_owned)
            .chain(paths_after(&code, "super::").map(|p| [parent.join("::"), p.to_owned()].join("::")))
            .filter_map(|p| module_of(p.trim_start_matches("::"), known));
        let uses: BTreeSet<String> =
            targets.filter(|t| t != name && !name.starts_with(&format!("{t}::")) && t != "crate").collect();
        graph.insert(name.clone(), uses);
    }
    graph
}

/// A cycle in `graph`, as the modules along it, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|start| visit(start, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_module_graph_has_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let known = modules(&src);
    assert!(known.contains_key("ingress::http") && known.contains_key("crate"), "found {:?}", known.keys());
    let graph = edges(&known);
    assert!(graph["ingress::proxy"].contains("tunnel::upstream"), "edges are read: {:?}", graph["ingress::proxy"]);
    if let Some(cycle) = find_cycle(&graph) {
        panic!("module cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn a_cycle_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["c".to_owned()])),
        ("c".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]
    .into();
    assert_eq!(find_cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
}
