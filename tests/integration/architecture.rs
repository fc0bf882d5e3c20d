//! The shape of the code: inside each crate, no two modules import each other in a circle.
//! Cargo already refuses a cycle between crates; this test does the same for the modules of one
//! crate, by reading the sources: every `crate::a::b` and `super::x` path (outside `#[cfg(test)]
//! mod tests`, comments and string literals) is an edge from the module it is written in to the
//! deepest module it names. A parent's `mod child;` declaration is not an edge, so an `impl`
//! block split across a folder's files is fine; a parent that also imports from its child, while
//! the child imports from it, is a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`runner::phase`) -> source file, for one crate's `src/`.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(src).into_iter().flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let rel = path.strip_prefix(src).unwrap().with_extension("");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        let name = parts.join("::");
        let name = if name == "lib" || name == "main" {
            String::new()
        } else {
            name
        };
        out.insert(name, path.to_path_buf());
    }
    out
}

/// The source without its test module, comments, string and char literals (paths in them are
/// not imports).
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '/' if chars.get(i + 1) == Some(&'/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                out.push_str("\"\"");
                i += 1;
            }
            // A char literal ('"', '\'', 'x'); a lifetime ('a) has no closing quote after one char.
            '\'' if chars.get(i + 1) == Some(&'\\') => {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            }
            '\'' if chars.get(i + 2) == Some(&'\'') => i += 3,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The identifiers of a path starting right after `prefix` at each of its occurrences:
/// `crate::a::b::C` gives `[a, b, C]`; a group `crate::{a, b::c}` gives one path per member.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let ident = |s: &str| -> Vec<String> {
        s.split("::")
            .map(|p| {
                p.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .take_while(|p| !p.is_empty())
            .collect()
    };
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for member in group[..end].split(',') {
                let path = ident(member.trim());
                if !path.is_empty() {
                    out.push(path);
                }
            }
        } else {
            out.push(ident(rest));
        }
    }
    out
}

/// Edges of one crate's module graph: from the module a path is written in to the deepest
/// module of the crate that path names (itself excluded).
fn edges(mods: &BTreeMap<String, PathBuf>) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let deepest = |parts: &[String]| -> Option<String> {
        (1..=parts.len())
            .rev()
            .map(|k| parts[..k].join("::"))
            .find(|candidate| mods.contains_key(candidate))
    };
    for (name, path) in mods {
        let code = code_of(&std::fs::read_to_string(path).unwrap());
        let mut targets = BTreeSet::new();
        for parts in paths_after(&code, "crate::") {
            if let Some(target) = deepest(&parts) {
                targets.insert(target);
            }
        }
        if let Some((parent, _)) = name.rsplit_once("::") {
            for parts in paths_after(&code, "super::") {
                let mut full: Vec<String> = parent.split("::").map(str::to_string).collect();
                full.extend(parts);
                if let Some(target) = deepest(&full) {
                    targets.insert(target);
                }
            }
        }
        targets.remove(name);
        targets.remove("");
        out.insert(name.clone(), targets);
    }
    out
}

/// Strongly connected components of more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.stack.contains(&w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

fn crate_sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = vec![root.join("src")];
    let mut crates: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("src"))
        .filter(|p| p.is_dir())
        .collect();
    crates.sort();
    out.extend(crates);
    out
}

#[test]
fn no_crate_has_a_cycle_between_its_modules() {
    let mut problems = Vec::new();
    for src in crate_sources() {
        let graph = edges(&modules(&src));
        for cycle in cycles(&graph) {
            let detail: Vec<String> = cycle
                .iter()
                .flat_map(|from| {
                    graph[from]
                        .iter()
                        .filter(|to| cycle.contains(to))
                        .map(move |to| format!("{from} -> {to}"))
                })
                .collect();
            problems.push(format!("{}: {}", src.display(), detail.join(", ")));
        }
    }
    assert!(
        problems.is_empty(),
        "modules import each other in a circle; move the shared item into the lower module:\n{}",
        problems.join("\n")
    );
}

/// The walk itself: a planted cycle is found, a parent's `mod` declaration is not an edge.
#[test]
fn the_module_walk_finds_a_planted_cycle() {
    let dir = tempfile::TempDir::new().unwrap();
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\npub mod c;\n").unwrap();
    std::fs::write(
        src.join("a.rs"),
        "use crate::b::Thing;\n// crate::c in a comment\n",
    )
    .unwrap();
    std::fs::write(src.join("b.rs"), "use crate::{c, a::More};\n").unwrap();
    std::fs::write(
        src.join("c.rs"),
        "const X: &str = \"crate::a\";\nconst Q: char = '\"';\nfn f<'a>(_: &'a str) {}\n",
    )
    .unwrap();
    std::fs::create_dir(src.join("c")).unwrap();
    std::fs::write(src.join("c/d.rs"), "use super::X;\n").unwrap();
    let graph = edges(&modules(src));
    assert_eq!(cycles(&graph), vec![vec!["a".to_string(), "b".to_string()]]);
    assert!(
        graph["c"].is_empty(),
        "strings and `mod` are not edges: {graph:?}"
    );
    assert_eq!(graph["c::d"], BTreeSet::from(["c".to_string()]));
}
