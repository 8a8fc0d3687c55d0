//! The modules of `proxy/src` import each other in one direction only: no
//! import circles. Each file is a module (`net/stream.rs` is
//! `net::stream`, `net/mod.rs` is `net`); an edge is a `crate::…` or
//! `super::…` path in code that is not test code (`#[cfg(test)]` items
//! and the files they include are left out), resolved to the deepest
//! module it names. Circles are printed as `a -> b -> a`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path (`["net", "stream"]`) per source file under `src`.
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap();
            let mut parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            match parts.last().map(String::as_str) {
                Some("main") if parts.len() == 1 => continue, // another crate
                Some("lib") if parts.len() == 1 => parts.clear(),
                Some("mod") => {
                    parts.pop();
                }
                _ => {}
            }
            out.insert(parts, path);
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Hash,
    Other(char),
}

/// Rust tokens with comments, strings and char literals left out: enough
/// to read paths and `#[cfg(test)]`.
fn tokens(text: &str) -> Vec<Token> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if ch == 'r' && matches!(c.get(i + 1), Some('#') | Some('"')) {
            // A raw string (r"…", r#"…"#); `r#ident` has no quote.
            let mut j = i + 1;
            while c.get(j) == Some(&'#') {
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(Token::Ident("r".into()));
                i += 1;
                continue;
            }
            let hashes = j - i - 1;
            j += 1;
            while j < c.len()
                && !(c[j] == '"' && (0..hashes).all(|k| c.get(j + 1 + k) == Some(&'#')))
            {
                j += 1;
            }
            i = j + 1 + hashes;
        } else if ch == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if ch == '\'' {
            // A char literal ('a', '\n', '\u{1F}') or a lifetime ('a).
            if c.get(i + 1) == Some(&'\\') {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(c[start..i].iter().collect()));
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push(Token::PathSep);
            i += 2;
        } else {
            out.push(match ch {
                '{' => Token::Open,
                '}' => Token::Close,
                ',' => Token::Comma,
                '#' => Token::Hash,
                _ if ch.is_whitespace() => {
                    i += 1;
                    continue;
                }
                other => Token::Other(other),
            });
            i += 1;
        }
    }
    out
}

fn is_ident(t: Option<&Token>, name: &str) -> bool {
    matches!(t, Some(Token::Ident(s)) if s == name)
}

/// `tokens` without the items marked `#[cfg(test)]`; the names of
/// `#[cfg(test)] mod name;` files go to `test_files`.
fn without_tests(t: Vec<Token>, test_files: &mut BTreeSet<String>) -> Vec<Token> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let cfg_test = t[i] == Token::Hash
            && t.get(i + 1) == Some(&Token::Other('['))
            && is_ident(t.get(i + 2), "cfg")
            && t.get(i + 3) == Some(&Token::Other('('))
            && is_ident(t.get(i + 4), "test")
            && t.get(i + 5) == Some(&Token::Other(')'))
            && t.get(i + 6) == Some(&Token::Other(']'));
        if !cfg_test {
            out.push(t[i].clone());
            i += 1;
            continue;
        }
        // Skip the item: up to its `;` at depth 0 or its closing brace.
        i += 7;
        let mut j = i;
        let mut name = None;
        while j < t.len() && !matches!(t[j], Token::Open | Token::Other(';')) {
            if is_ident(t.get(j), "mod") {
                if let Some(Token::Ident(n)) = t.get(j + 1) {
                    name = Some(n.clone());
                }
            }
            j += 1;
        }
        if t.get(j) == Some(&Token::Other(';')) {
            test_files.extend(name);
            i = j + 1;
            continue;
        }
        let mut depth = 0;
        while j < t.len() {
            match t[j] {
                Token::Open => depth += 1,
                Token::Close => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            j += 1;
        }
        i = j + 1;
    }
    out
}

/// Every path that starts with `crate::` or `super::`, as absolute
/// segments (groups `{a, b::c}` expanded), from module `me`.
fn paths(t: &[Token], me: &[String]) -> Vec<Vec<String>> {
    fn rest(t: &[Token], mut i: usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
        let mut path = prefix;
        loop {
            match t.get(i) {
                Some(Token::Ident(s)) => {
                    path.push(s.clone());
                    i += 1;
                    if t.get(i) == Some(&Token::PathSep) {
                        i += 1;
                        continue;
                    }
                    out.push(path);
                    return i;
                }
                Some(Token::Open) => {
                    i += 1;
                    loop {
                        i = rest(t, i, path.clone(), out);
                        match t.get(i) {
                            Some(Token::Comma) if t.get(i + 1) == Some(&Token::Close) => {
                                return i + 2
                            }
                            Some(Token::Comma) => i += 1,
                            Some(Token::Close) => return i + 1,
                            _ => return i,
                        }
                    }
                }
                _ => {
                    out.push(path);
                    return i;
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let start = match t.get(i) {
            Some(Token::Ident(s)) if s == "crate" => Some(Vec::new()),
            Some(Token::Ident(s)) if s == "super" => {
                let mut base = me.to_vec();
                let mut j = i;
                while is_ident(t.get(j), "super") && t.get(j + 1) == Some(&Token::PathSep) {
                    base.pop();
                    j += 2;
                }
                if j > i {
                    i = j - 2;
                    Some(base)
                } else {
                    None
                }
            }
            _ => None,
        };
        // `pub(crate)` and `pub(super)` are visibility, not paths.
        let visibility = i > 0 && t[i - 1] == Token::Other('(');
        match start {
            Some(base) if !visibility && t.get(i + 1) == Some(&Token::PathSep) => {
                i = rest(t, i + 2, base, &mut out);
            }
            _ => i += 1,
        }
    }
    out
}

fn graph(src: &Path) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let modules = modules(src);
    let mut test_only: BTreeSet<Vec<String>> = BTreeSet::new();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (me, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap();
        let mut test_files = BTreeSet::new();
        let code = without_tests(tokens(&text), &mut test_files);
        for name in test_files {
            let mut m = me.clone();
            m.push(name);
            test_only.insert(m);
        }
        let targets = edges.entry(me.clone()).or_default();
        for path in paths(&code, me) {
            // The deepest module the path names.
            let target = (0..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|p| modules.contains_key(p))
                .unwrap_or_default();
            // A module's own items and its ancestors' are not imports of
            // another module: a parent (`mod.rs`) declares its children.
            if &target != me && !me.starts_with(&target) {
                targets.insert(target);
            }
        }
    }
    for m in &test_only {
        edges.remove(m);
    }
    edges
}

fn name(m: &[String]) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

/// The circles of `edges`, one per strongly connected component, each
/// printed along an actual path.
fn circles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<String> {
    let mut found = Vec::new();
    let mut reported: BTreeSet<Vec<String>> = BTreeSet::new();
    for start in edges.keys() {
        if reported.contains(start) {
            continue;
        }
        // Breadth-first search back to `start`.
        let mut prev: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start.clone()]);
        let mut hit = None;
        while let Some(m) = queue.pop_front() {
            for next in edges.get(&m).into_iter().flatten() {
                if next == start {
                    hit = Some(m.clone());
                    break;
                }
                if !prev.contains_key(next) {
                    prev.insert(next.clone(), m.clone());
                    queue.push_back(next.clone());
                }
            }
            if hit.is_some() {
                break;
            }
        }
        if let Some(mut m) = hit {
            let mut cycle = vec![start.clone()];
            while &m != start {
                cycle.push(m.clone());
                m = prev[&m].clone();
            }
            cycle.push(start.clone());
            cycle.reverse();
            reported.extend(cycle.iter().cloned());
            found.push(
                cycle
                    .iter()
                    .map(|m| name(m))
                    .collect::<Vec<_>>()
                    .join(" -> "),
            );
        }
    }
    found
}

#[test]
fn proxy_modules_import_each_other_without_circles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&src);
    // The reader finds edges at all: a graph without any would pass
    // vacuously.
    let config_users = edges
        .iter()
        .filter(|(_, to)| to.contains(&vec!["config".to_string()]))
        .count();
    assert!(config_users > 0, "no module imports config: {edges:?}");
    let found = circles(&edges);
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn config_is_a_leaf() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&src);
    let config: Vec<_> = edges
        .iter()
        .filter(|(m, _)| m.first().is_some_and(|s| s == "config"))
        .flat_map(|(m, to)| to.iter().map(move |t| (name(m), name(t))))
        .filter(|(_, t)| !t.starts_with("config"))
        .collect();
    assert!(
        config.is_empty(),
        "config imports other modules: {config:?}"
    );
}

#[test]
fn the_reader_sees_paths_groups_and_skips_tests() {
    let me = vec!["net".to_string(), "stream".to_string()];
    let code = "use crate::{a::b, c::{d, e::f}}; fn x() { super::y::z(); }\n\
                // crate::comment::ignored\n let s = \"crate::in_string\";\n\
                pub(crate) fn q() {}\n#[cfg(test)] mod tests { use crate::test_only; }";
    let mut test_files = BTreeSet::new();
    let t = without_tests(tokens(code), &mut test_files);
    let got: Vec<String> = paths(&t, &me).iter().map(|p| p.join("::")).collect();
    assert_eq!(got, ["a::b", "c::d", "c::e::f", "net::y::z"]);
    let mut test_files = BTreeSet::new();
    without_tests(tokens("#[cfg(test)]\nmod portal_tests;"), &mut test_files);
    assert_eq!(test_files, BTreeSet::from(["portal_tests".to_string()]));
    // A circle is found and printed along its path.
    let m = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
    let edges = BTreeMap::from([
        (m("a"), BTreeSet::from([m("b")])),
        (m("b"), BTreeSet::from([m("c")])),
        (m("c"), BTreeSet::from([m("a")])),
    ]);
    assert_eq!(circles(&edges), ["a -> b -> c -> a"]);
}
