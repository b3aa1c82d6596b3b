//! The crate's modules import each other one way only (format → segment and reader →
//! projection → recovery, compaction and history → store), so no module imports another that
//! imports it back, and no source file outgrows a reader: `docs/DESIGN.md`, "Modules".
//!
//! The imports are read from the source as text: every `crate::a::b` path (in `use` lines and
//! in code) and every `super::x` path names a module the file depends on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest a file of the library may be.
const FILE_LINES_MAX: usize = 900;

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src/` (`store/mod.rs` → `store`, `lib.rs` → ``).
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts.join("::")
}

/// The source without comments, and without the unit tests (`#[cfg(test)]` onwards), which may
/// use anything.
fn code(text: &str) -> String {
    without_comments(text.split("#[cfg(test)]").next().unwrap_or_default())
}

/// The source without comments.
fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The identifiers of a path that starts at `at` in `text` (`a::b::{c, d}` → `[a, b]`).
fn path_at(text: &str, at: usize) -> Vec<String> {
    let mut segments = Vec::new();
    let mut rest = &text[at..];
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        segments.push(rest[..end].to_owned());
        match rest[end..].strip_prefix("::") {
            Some(more) => rest = more,
            None => break,
        }
    }
    segments
}

/// What each module imports: the longest known module each of its paths names.
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    imports_read(src, code)
}

/// What each top-level module (with all its files, their unit tests included) imports of the
/// others.
fn top_level_imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let top = |module: &str| module.split("::").next().unwrap_or_default().to_owned();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, deps) in imports_read(src, without_comments) {
        let module = top(&module);
        let deps: BTreeSet<String> = deps
            .iter()
            .map(|d| top(d))
            .filter(|d| *d != module)
            .collect();
        graph.entry(module).or_default().extend(deps);
    }
    graph
}

/// [`imports`], each file's text read through `read`.
fn imports_read(src: &Path, read: fn(&str) -> String) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    files.retain(|f| !f.starts_with(src.join("bin")));
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(src, f)).collect();
    let mut graph = BTreeMap::new();
    for file in &files {
        let module = module_of(src, file);
        let text = read(&std::fs::read_to_string(file).unwrap());
        let mut deps = BTreeSet::new();
        let parent = module.rsplit_once("::").map_or("", |(parent, _)| parent);
        let mut named = Vec::new();
        for (at, _) in text.match_indices("crate::") {
            named.push(path_at(&text, at + "crate::".len()));
        }
        for (at, _) in text.match_indices("super::") {
            let mut path: Vec<String> = parent
                .split("::")
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect();
            path.extend(path_at(&text, at + "super::".len()));
            named.push(path);
        }
        // `use crate::{a, b::c}` names several modules at once.
        for (at, _) in text.match_indices("crate::{") {
            let inner = &text[at + "crate::{".len()..];
            let inner = &inner[..inner.find("};").unwrap_or(inner.len())];
            for item in inner.split(',') {
                named.push(path_at(item.trim(), 0));
            }
        }
        for path in named {
            let longest = (1..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|candidate| modules.contains(candidate));
            if let Some(dep) = longest.filter(|dep| *dep != module && !dep.is_empty()) {
                deps.insert(dep);
            }
        }
        graph.insert(module, deps);
    }
    graph
}

/// The modules that lie on a circle of imports (strongly connected components of more than
/// one module).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    let reaches = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(module) = stack.pop() {
            for dep in graph.get(&module).into_iter().flatten() {
                if seen.insert(dep.clone()) {
                    stack.push(dep.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&String, BTreeSet<String>> = graph
        .keys()
        .map(|module| (module, reaches(module)))
        .collect();
    let mut found: Vec<BTreeSet<String>> = Vec::new();
    for (module, reached) in &reach {
        let circle: BTreeSet<String> = reached
            .iter()
            .filter(|other| reach.get(other).is_some_and(|back| back.contains(*module)))
            .cloned()
            .collect();
        if circle.len() > 1 && !found.contains(&circle) {
            found.push(circle);
        }
    }
    found
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = imports(&src);
    assert!(graph.contains_key("store") && graph["store"].contains("segment"));
    let found = circles(&graph);
    assert!(found.is_empty(), "modules importing each other: {found:?}");
}

#[test]
fn no_top_level_module_imports_one_that_imports_it_back_unit_tests_included() {
    // A unit test that uses `testing` (the simulated file systems) ties its module to it, so
    // `testing` must not import such a module back.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = top_level_imports(&src);
    assert!(graph.contains_key("anchor") && graph["anchor"].contains("testing"));
    let found = circles(&graph);
    assert!(found.is_empty(), "modules importing each other: {found:?}");
}

#[test]
fn the_circle_check_finds_a_circle() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", &["b"][..]),
        ("b", &["c"][..]),
        ("c", &["a"][..]),
        ("d", &["a"][..]),
    ]
    .into_iter()
    .map(|(m, deps)| (m.to_owned(), deps.iter().map(|d| (*d).to_owned()).collect()))
    .collect();
    let found = circles(&graph);
    let expected: BTreeSet<String> = ["a", "b", "c"].into_iter().map(str::to_owned).collect();
    assert_eq!(found, vec![expected]);
}

#[test]
fn no_library_file_is_longer_than_a_reader_can_hold() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let long: Vec<(PathBuf, usize)> = files
        .into_iter()
        .map(|f| {
            let lines = std::fs::read_to_string(&f).unwrap().lines().count();
            (f, lines)
        })
        .filter(|(_, lines)| *lines > FILE_LINES_MAX)
        .collect();
    assert!(
        long.is_empty(),
        "files over {FILE_LINES_MAX} lines: {long:?}"
    );
}
