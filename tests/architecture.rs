//! The shape of the source tree, checked on every `cargo test`: the crate's top-level modules import each
//! other without a cycle (so each layer can be read, tested and replaced on its own), and a source file
//! with more than [`LONG_FILE`] lines of code says why at its top with a `//! Long:` line (unit tests, in
//! `tests.rs` files or an inline `mod tests`, do not count). Every file of tests/ runs: it is a module of
//! tests/integration.rs or a test binary of its own in Cargo.toml (autotests is off).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lines past which a source file must give its reason for being one file.
const LONG_FILE: usize = 500;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The crate's top-level modules: `src/x.rs` and `src/x/`, without the crate roots.
fn top_level_modules() -> BTreeSet<String> {
    std::fs::read_dir(src())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            if p.is_dir() {
                Some(name)
            } else {
                name.strip_suffix(".rs").map(str::to_string)
            }
        })
        .filter(|m| m != "lib" && m != "main")
        .collect()
}

/// The top-level module a file belongs to.
fn module_of(file: &Path) -> String {
    let first = file.strip_prefix(src()).unwrap().components().next().unwrap();
    let name = first.as_os_str().to_str().unwrap();
    name.strip_suffix(".rs").unwrap_or(name).to_string()
}

/// The code of a file that counts for imports: without comments, and without unit tests (a test may use
/// whatever it checks).
fn code_of(file: &Path) -> String {
    if file.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let text = std::fs::read_to_string(file).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &text[..at],
        None => &text[..],
    };
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules named in `crate::` paths of `code`, including `crate::{a, b::c}` groups.
fn crate_paths(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let head = item.trim().split("::").next().unwrap_or("").trim();
                named.insert(head.to_string());
            }
        } else {
            let head: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            named.insert(head);
        }
    }
    named.retain(|m| modules.contains(m));
    named
}

/// Module -> the top-level modules it imports.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = top_level_modules();
    let mut graph: BTreeMap<String, BTreeSet<String>> = modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for file in rust_files(&src()) {
        let module = module_of(&file);
        if !modules.contains(&module) {
            continue;
        }
        let mut named = crate_paths(&code_of(&file), &modules);
        named.remove(&module);
        graph.get_mut(&module).unwrap().extend(named);
    }
    graph
}

/// A cycle through `graph`, as the modules along it, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_string(), Mark::Open);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match marks.get(next.as_str()) {
                Some(Mark::Open) => {
                    let start = path.iter().position(|p| p == next).unwrap();
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(cycle) = visit(next, graph, marks, path) {
                        return Some(cycle);
                    }
                }
            }
        }
        path.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if !marks.contains_key(node) {
            if let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new()) {
                return Some(cycle);
            }
        }
    }
    None
}

#[test]
fn top_level_modules_import_each_other_without_a_cycle() {
    let graph = import_graph();
    assert!(graph.len() > 10, "the module list was not read: {graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!("module import cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_cycle_check_finds_a_cycle_and_reads_grouped_paths() {
    let modules: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
    let code = "use crate::{a::X, b};\n// crate::c in a comment\nfn f() { crate::a::y(); }";
    assert_eq!(
        crate_paths(
            &code
                .lines()
                .map(|l| l.split("//").next().unwrap())
                .collect::<Vec<_>>()
                .join("\n"),
            &modules
        ),
        ["a", "b"].map(String::from).into()
    );
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), ["b".to_string()].into()),
        ("b".to_string(), ["c".to_string()].into()),
        ("c".to_string(), ["a".to_string()].into()),
    ]
    .into();
    assert_eq!(find_cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
    let mut acyclic = graph.clone();
    acyclic.get_mut("c").unwrap().clear();
    assert_eq!(find_cycle(&acyclic), None);
}

#[test]
fn long_source_files_say_why_at_their_top() {
    let mut unexplained = Vec::new();
    for file in rust_files(&src()) {
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text
            .find("#[cfg(test)]\nmod tests {")
            .map_or(&text[..], |at| &text[..at]);
        let lines = code.lines().count();
        let head: Vec<&str> = text
            .lines()
            .take_while(|l| l.starts_with("//!") || l.is_empty())
            .collect();
        if lines > LONG_FILE && !head.iter().any(|l| l.starts_with("//! Long:")) {
            unexplained.push(format!(
                "{} ({lines} lines)",
                file.strip_prefix(src()).unwrap().display()
            ));
        }
    }
    assert!(
        unexplained.is_empty(),
        "source files with over {LONG_FILE} lines of code without a `//! Long:` reason at their top:\n{}",
        unexplained.join("\n")
    );
}

/// `name` for every `[[test]]` of Cargo.toml whose path is `tests/<name>.rs`.
fn declared_test_binaries(manifest: &str) -> BTreeSet<String> {
    manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("path = \"tests/")?.strip_suffix(".rs\""))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_test_file_is_a_module_of_integration_or_a_declared_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let binaries = declared_test_binaries(&manifest);
    assert!(
        binaries.contains("integration"),
        "Cargo.toml declares tests/integration.rs"
    );
    let integration = std::fs::read_to_string(root.join("tests/integration.rs")).unwrap();
    let modules: BTreeSet<String> = integration
        .lines()
        .filter_map(|l| l.strip_prefix("mod ")?.strip_suffix(';'))
        .map(str::to_string)
        .collect();
    let mut orphans = Vec::new();
    for entry in std::fs::read_dir(root.join("tests")).unwrap() {
        let path = entry.unwrap().path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".rs"))
        else {
            continue;
        };
        if !binaries.contains(name) && !modules.contains(name) {
            orphans.push(name.to_string());
        }
        assert!(
            !(binaries.contains(name) && modules.contains(name)),
            "tests/{name}.rs is both a module of integration.rs and a binary of its own"
        );
    }
    assert!(
        orphans.is_empty(),
        "files under tests/ that no test binary compiles (add them to tests/integration.rs): {orphans:?}"
    );
}
