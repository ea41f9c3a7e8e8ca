//! docs/architecture.md names files and functions; a name that no longer
//! exists is a bug in the doc. This checks that every `src/...` path in it
//! exists, and that every function written `name()` or `Type::name()` is
//! defined (`fn name`) in a file named on the same table row, or in the
//! file named right after it in prose: "`name()` (`src/x.rs`)".

use std::path::Path;

const DOC: &str = "docs/architecture.md";

/// The code spans (text between backticks) of one line.
fn spans(line: &str) -> Vec<&str> {
    line.split('`').skip(1).step_by(2).collect()
}

fn is_path(s: &str) -> bool {
    s.starts_with("src/")
}

/// `Type::name()` or `name()` → `name`.
fn function(s: &str) -> Option<&str> {
    let name = s.strip_suffix("()")?.rsplit("::").next()?;
    let ident = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    ident.then_some(name)
}

fn defines(root: &Path, file: &str, name: &str) -> bool {
    let text = std::fs::read_to_string(root.join(file)).unwrap_or_default();
    text.contains(&format!("fn {name}(")) || text.contains(&format!("fn {name}<"))
}

/// Every problem found in `doc`, checked against the tree at `root`.
fn problems(root: &Path, doc: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (n, line) in doc.lines().enumerate() {
        let at = format!("{DOC}:{}", n + 1);
        let spans = spans(line);
        for p in spans.iter().filter(|s| is_path(s)) {
            if !root.join(p).exists() {
                out.push(format!("{at}: `{p}` does not exist"));
            }
        }
        let fns: Vec<(usize, &str)> = spans
            .iter()
            .enumerate()
            .filter_map(|(i, s)| function(s).map(|f| (i, f)))
            .collect();
        if line.trim_start().starts_with('|') {
            let files: Vec<&str> = spans
                .iter()
                .copied()
                .filter(|s| is_path(s) && s.ends_with(".rs"))
                .collect();
            if files.is_empty() {
                continue;
            }
            for (_, f) in &fns {
                if !files.iter().any(|file| defines(root, file, f)) {
                    out.push(format!("{at}: no `fn {f}` in {}", files.join(" or ")));
                }
            }
        } else {
            // Prose: "`name()` (`src/x.rs`)".
            for (i, f) in fns {
                let Some(file) = spans.get(i + 1).filter(|s| is_path(s)) else {
                    continue;
                };
                let between = line.split('`').nth(2 * i + 2).unwrap_or_default().trim();
                if between == "(" && !defines(root, file, f) {
                    out.push(format!("{at}: no `fn {f}` in {file}"));
                }
            }
        }
    }
    out
}

#[test]
fn every_file_and_function_the_architecture_doc_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join(DOC)).expect("docs/architecture.md");
    assert!(doc.matches("`src/").count() > 50, "the doc names the files");
    let found = problems(root, &doc);
    assert!(found.is_empty(), "\n{}", found.join("\n"));
}

#[test]
fn the_check_catches_missing_files_and_functions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = "\
| concept | `src/node/engine.rs` |
| 1 | `src/no/such.rs` | `x()` | gone |
| 2 | `src/node/engine.rs` | `Engine::no_such_fn()` | renamed |
| 3 | `src/node/engine.rs` | `Engine::outbound()` | fine |
Prose: `Engine::tick()` (`src/node/engine.rs`) and `gone()` (`src/node/engine.rs`).
";
    let found = problems(root, doc);
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(found[0].contains("`src/no/such.rs` does not exist"));
    assert!(found[1].contains("no `fn x`"));
    assert!(found[2].contains("no `fn no_such_fn`"));
    assert!(found[3].contains("no `fn gone`"));
}

/// The library's top-level modules (`src/X.rs` or `src/X/`) and which
/// others each one names as `crate::Y` in code (comment lines skipped).
fn module_graph(
    src: &Path,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, files);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    let mut graph = std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap();
        let top = rel.iter().next().unwrap().to_string_lossy();
        let top = top.trim_end_matches(".rs").to_string();
        if top == "bin" || top == "lib" {
            continue;
        }
        let deps = graph.entry(top.clone()).or_default();
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for part in line.split("crate::").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != top {
                    deps.insert(name);
                }
            }
        }
    }
    let known: std::collections::BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| known.contains(d));
    }
    graph
}

/// A cycle in `graph`, if it has one (depth-first search).
fn find_cycle(
    graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
) -> Option<Vec<String>> {
    fn visit(
        g: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        node: &str,
        path: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for d in g.get(node).into_iter().flatten() {
            if let Some(c) = visit(g, d, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = std::collections::BTreeSet::new();
    for node in graph.keys() {
        if let Some(c) = visit(graph, node, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_library_modules_import_no_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let graph = module_graph(&root.join("src"));
    assert!(graph.len() > 10, "{graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import cycle between top-level modules: {} (layers: docs/architecture.md)",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let mut g = std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(find_cycle(&g).unwrap().len(), 4);
    g.get_mut("c").unwrap().clear();
    assert_eq!(find_cycle(&g), None);
}
