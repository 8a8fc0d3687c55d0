//! Both crates' modules import one way only (`proxy/src` and
//! `analyzer/src`): no circle among the top-level modules, and none among
//! the files of any one folder; and the proxy's `config` is a leaf.
//!
//! A circle means two modules cannot be read, tested or changed apart, and
//! it is how two copies of one job (two lexers that must agree) creep in.
//! The graph is read from the source text, not from the compiler: every
//! `crate::…`, `super::…` and `self::…` path in `<crate>/src/**/*.rs`
//! (a `use` tree or a path in code) is an edge from the file that writes it
//! to the module it names. Within one folder, an edge runs from the child
//! module (file or subfolder) holding the code to the child module the path
//! lands in, so `super::collapse::X` in `fingerprint/normalize.rs` is the edge
//! `fingerprint::normalize → fingerprint::collapse`. Paths to an ancestor
//! (`super::Fingerprint` in a child of `fingerprint/mod.rs`) or from a folder's
//! `mod.rs` down into its children are the parent/child relation, not
//! edges. Test code (`#[cfg(test)] mod …` and `*tests.rs` files) and
//! comments are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path from the crate root (`["fingerprint", "normalize"]`).
type ModPath = Vec<String>;

/// Folder (a module path) → child → children it imports.
type Graphs = BTreeMap<ModPath, BTreeMap<String, BTreeSet<String>>>;

/// The `src` folder of the workspace crate in `dir` (`proxy`, `analyzer`).
fn crate_src(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(dir)
        .join("src")
}

/// Fails listing the circles among the modules of the crate in `dir`.
fn assert_one_way(dir: &str) {
    let graphs = graphs(&source_files(&crate_src(dir)));
    // The scan finds edges at all: a graph without any would pass vacuously.
    assert!(
        graphs.values().any(|g| g.values().any(|to| !to.is_empty())),
        "no imports found in {dir}/src"
    );
    let cycles = cycles(&graphs);
    assert!(
        cycles.is_empty(),
        "import circles in {dir}/src (the higher module must import the lower, never back):\n{}",
        cycles.join("\n")
    );
}

#[test]
fn analyzer_modules_import_one_way() {
    assert_one_way("analyzer");
}

#[test]
fn proxy_modules_import_one_way() {
    assert_one_way("proxy");
}

#[test]
fn the_proxy_config_is_a_leaf() {
    let graphs = graphs(&source_files(&crate_src("proxy")));
    let root = &graphs[&Vec::new()];
    assert!(
        root.values().any(|to| to.contains("config")),
        "no module imports config: {root:?}"
    );
    let imported = root.get("config").cloned().unwrap_or_default();
    assert!(
        imported.is_empty(),
        "config imports other modules of the proxy: {imported:?}"
    );
}

#[test]
fn the_scan_finds_edges_and_circles() {
    let files = vec![
        (
            vec!["a".to_string()],
            "use crate::{b::{X, Y}, c};\n// crate::d in a comment\n".to_string(),
        ),
        (
            vec!["b".into(), "m".into()],
            "fn f() { crate::a::g(); super::n::h(); }\n".into(),
        ),
        (vec!["b".into(), "n".into()], "use super::m::Z;\n".into()),
        (
            vec!["c".into()],
            "#[cfg(test)]\nmod tests {\n    use crate::a::A;\n}\n".into(),
        ),
        (vec!["d".into()], String::new()),
    ];
    let graphs = graphs(&files);
    let root = &graphs[&Vec::new()];
    assert_eq!(
        root["a"],
        BTreeSet::from(["b".to_string(), "c".to_string()])
    );
    assert_eq!(root["b"], BTreeSet::from(["a".to_string()]));
    assert!(!root.contains_key("c"), "test modules are skipped");
    let found = cycles(&graphs);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().any(|c| c.contains("a → b → a")), "{found:?}");
    assert!(found.iter().any(|c| c.contains("m → n → m")), "{found:?}");
}

/// Every non-test source file under `src`, as (module path, text).
fn source_files(src: &Path) -> Vec<(ModPath, String)> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path: PathBuf = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !name.ends_with(".rs") || name.ends_with("tests.rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src");
            let mut module: ModPath = rel
                .iter()
                .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).expect("readable source");
            out.push((module, text));
        }
    }
    out
}

/// The per-folder import graphs of `files`.
fn graphs(files: &[(ModPath, String)]) -> Graphs {
    // Every file's module and every folder above it.
    let known: BTreeSet<ModPath> = files
        .iter()
        .flat_map(|(m, _)| (0..=m.len()).map(|n| m[..n].to_vec()))
        .collect();
    let mut graphs = Graphs::new();
    for (module, text) in files {
        // In `x.rs` and in `x/mod.rs` (module `p::x` either way) `super`
        // is `p`: each `super` drops one segment of the module path.
        for (base, ups, rest) in paths(&strip_tests_and_comments(text)) {
            let mut target = match base {
                Base::Crate => Vec::new(),
                Base::Super => module[..module.len().saturating_sub(ups)].to_vec(),
                Base::SelfMod => module.clone(),
            };
            target.extend(rest);
            // The module a path lands in: its longest prefix that is a file.
            while !target.is_empty() && !known.contains(&target) {
                target.pop();
            }
            let common = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if let (Some(from), Some(to)) = (module.get(common), target.get(common)) {
                graphs
                    .entry(module[..common].to_vec())
                    .or_default()
                    .entry(from.clone())
                    .or_default()
                    .insert(to.clone());
            }
        }
    }
    graphs
}

/// Where a path starts.
#[derive(Clone, Copy)]
enum Base {
    Crate,
    Super,
    SelfMod,
}

/// The text without comments and without `#[cfg(test)] mod … { … }` blocks.
fn strip_tests_and_comments(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let code = line.split("//").next().unwrap_or("");
        if code.trim() == "#[cfg(test)]" {
            let next = lines.peek().map(|l| l.trim_start()).unwrap_or("");
            if next.starts_with("mod ") || next.starts_with("pub(crate) mod ") {
                // Skip to the brace that closes the module (test modules
                // hold no braces in strings that would unbalance this).
                let mut depth = 0i32;
                let mut opened = false;
                for l in lines.by_ref() {
                    let l = l.split("//").next().unwrap_or("");
                    depth += l.matches('{').count() as i32 - l.matches('}').count() as i32;
                    opened |= l.contains('{');
                    if (opened && depth <= 0) || (!opened && l.trim_end().ends_with(';')) {
                        break;
                    }
                }
                continue;
            }
        }
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Every `crate::…`, `super::…` and `self::…` path in `code`, a `use` tree
/// expanded into one path per leaf. The number is how many `super`s the
/// path starts with (`super::super::x` climbs two).
fn paths(code: &str) -> Vec<(Base, usize, Vec<String>)> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    for (keyword, base) in [
        ("crate::", Base::Crate),
        ("super::", Base::Super),
        ("self::", Base::SelfMod),
    ] {
        let mut from = 0;
        while let Some(at) = code[from..].find(keyword).map(|i| from + i) {
            from = at + keyword.len();
            let before = at.checked_sub(1).map(|i| bytes[i]);
            // `$crate::`, `my_crate::`, the second `super` of
            // `super::super::` (read from the first), `pub(in crate::x)`.
            let inside_word = before
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b == b':');
            if inside_word || code[..at].trim_end().ends_with("(in") {
                continue;
            }
            let mut ups = usize::from(matches!(base, Base::Super));
            let mut rest = &code[from..];
            while let Some(r) = rest.strip_prefix("super::") {
                ups += 1;
                rest = r;
            }
            for leaf in use_tree(rest) {
                out.push((base, ups, leaf));
            }
        }
    }
    out
}

/// The leaves of a use tree (or a plain path) at the start of `text`:
/// `a::{b::{C, D}, e}` → `[a, b, C]`, `[a, b, D]`, `[a, e]`.
fn use_tree(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut pos = 0;
    tree(text.as_bytes(), &mut pos, Vec::new(), &mut out);
    out
}

fn tree(b: &[u8], pos: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    loop {
        skip_ws(b, pos);
        if b.get(*pos) == Some(&b'{') {
            *pos += 1;
            loop {
                tree(b, pos, path.clone(), out);
                skip_ws(b, pos);
                match b.get(*pos) {
                    Some(b',') => *pos += 1,
                    Some(b'}') => {
                        *pos += 1;
                        return;
                    }
                    _ => return,
                }
                skip_ws(b, pos);
                if b.get(*pos) == Some(&b'}') {
                    *pos += 1;
                    return;
                }
            }
        }
        let start = *pos;
        while b
            .get(*pos)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        {
            *pos += 1;
        }
        if *pos > start {
            let segment = String::from_utf8_lossy(&b[start..*pos]).into_owned();
            if segment != "self" {
                path.push(segment);
            }
        }
        if b[*pos..].starts_with(b"::") {
            *pos += 2;
            continue;
        }
        out.push(path);
        return;
    }
}

fn skip_ws(b: &[u8], pos: &mut usize) {
    while b.get(*pos).is_some_and(|c| c.is_ascii_whitespace()) {
        *pos += 1;
    }
}

/// One line per circle: the folder and the circle's path.
fn cycles(graphs: &Graphs) -> Vec<String> {
    let mut out = Vec::new();
    for (folder, graph) in graphs {
        let name = if folder.is_empty() {
            "crate".to_string()
        } else {
            folder.join("::")
        };
        let mut reported: BTreeSet<BTreeSet<String>> = BTreeSet::new();
        for start in graph.keys() {
            if let Some(cycle) = cycle_through(graph, start) {
                let members: BTreeSet<String> = cycle.iter().cloned().collect();
                if reported.insert(members) {
                    out.push(format!("{name}: {}", cycle.join(" → ")));
                }
            }
        }
    }
    out
}

/// The shortest circle from `start` back to itself, if any (breadth-first).
fn cycle_through(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut previous: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for next in graph.get(node).into_iter().flatten() {
            if next == start {
                let mut path = vec![start.to_string()];
                let mut at = node;
                let mut back = vec![node.to_string()];
                while at != start {
                    at = previous[at];
                    back.push(at.to_string());
                }
                back.pop();
                back.reverse();
                path.extend(back);
                path.push(start.to_string());
                return Some(path);
            }
            if next != start && !previous.contains_key(next.as_str()) {
                previous.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    None
}
