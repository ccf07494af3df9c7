//! The layers of `src/` hold: a module imports only from its own layer or the layers below
//! (the table in `src/lib.rs`). Reads every `crate::` path in the code of every file under
//! `src/` (comments and doc links are not imports) and names each file and import that
//! reaches up.

use std::path::{Path, PathBuf};

/// Each top-level module of the crate and its layer, bottom first.
const LAYERS: &[(&str, u8)] = &[
    ("config", 1),
    ("settings", 1),
    ("metrics", 1),
    ("store", 1),
    ("base", 1),
    ("netguard", 1),
    ("escape", 1),
    ("accounts", 2),
    ("classify", 2),
    ("rewrite", 3),
    ("events", 3),
    ("queue", 3),
    ("deliver", 4),
    ("track", 4),
    ("notify", 4),
    ("compose", 4),
    ("followup", 4),
    ("replies", 4),
    ("insights", 4),
    ("deliverability", 4),
    ("erasure", 4),
    ("relay", 5),
    ("http", 5),
    ("serve", 6),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
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

/// The top-level module a file under `src/` belongs to (`src/http/api/users.rs` is `http`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The top-level modules named by `crate::` paths in `line`, including inside braces
/// (`use crate::{a, b::c}`).
fn imports(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        // `mailtally_crate::x` or `$crate::` are not this crate's paths.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != "self" {
                    found.push(name);
                }
            }
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.push(name);
        }
    }
    found
}

#[test]
fn no_module_imports_from_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut unplaced = Vec::new();
    let mut upward = Vec::new();
    let mut seen = 0;
    for file in &files {
        let module = module_of(&src, file);
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(own) = layer(&module) else {
            unplaced.push(file.display().to_string());
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for target in imports(code) {
                seen += 1;
                match layer(&target) {
                    Some(l) if l > own => upward.push(format!(
                        "{}:{}: `{module}` (layer {own}) imports `crate::{target}` (layer {l})",
                        file.strip_prefix(&src).unwrap().display(),
                        n + 1
                    )),
                    Some(_) => {}
                    None => unplaced.push(format!("crate::{target} in {}", file.display())),
                }
            }
        }
    }
    assert!(seen > 100, "the scan found only {seen} imports");
    assert!(
        unplaced.is_empty(),
        "modules in no layer (add them to LAYERS and to the table in src/lib.rs):\n{}",
        unplaced.join("\n")
    );
    assert!(
        upward.is_empty(),
        "imports from a layer above:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_scan_reads_plain_braced_and_nested_paths() {
    assert_eq!(imports("use crate::http::auth::Caller;"), ["http"]);
    assert_eq!(
        imports("use crate::{accounts::User, queue, self};"),
        ["accounts", "queue"]
    );
    assert_eq!(
        imports("let x = crate::relay::start(crate::base::host_name());"),
        ["relay", "base"]
    );
    assert!(imports("macro: $crate::x, other_crate::y").is_empty());
}

/// The tables named by `sql/`'s `CREATE TABLE` statements.
fn tables() -> Vec<String> {
    let sql = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(sql).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for part in text.split("CREATE TABLE ").skip(1) {
            let part = part.trim_start_matches("IF NOT EXISTS ");
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

#[test]
fn each_table_is_written_by_one_module() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let tables = tables();
    assert!(tables.len() > 20, "{tables:?}");
    let mut writers: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for file in &files {
        let module = module_of(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        for verb in ["INSERT INTO ", "UPDATE ", "DELETE FROM "] {
            for part in text.split(verb).skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if tables.contains(&name) {
                    writers.entry(name).or_default().insert(format!(
                        "{module} ({})",
                        file.strip_prefix(&src).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(writers.contains_key("events") && writers.contains_key("copies"));
    let shared: Vec<String> = writers
        .iter()
        .filter(|(_, w)| {
            let modules: std::collections::BTreeSet<&str> =
                w.iter().map(|m| m.split(' ').next().unwrap()).collect();
            modules.len() > 1
        })
        .map(|(t, w)| format!("{t}: {w:?}"))
        .collect();
    assert!(
        shared.is_empty(),
        "tables written by more than one module (let the owner write, the others call it):\n{}",
        shared.join("\n")
    );
}
