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
