//! Embeds the numbered SQL migrations of `sql/` in the binary.

use std::fmt::Write;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=sql");
    let mut files: Vec<(u32, String)> = std::fs::read_dir("sql")
        .expect("sql/ exists")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let number = name.split('_').next()?.parse::<u32>().ok()?;
            name.ends_with(".sql").then_some((number, name))
        })
        .collect();
    files.sort();
    for pair in files.windows(2) {
        assert!(
            pair[0].0 != pair[1].0,
            "two migrations numbered {}",
            pair[0].0
        );
    }
    let root = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let mut out = String::from("pub static MIGRATIONS: &[Migration] = &[\n");
    for (number, name) in files {
        let path = Path::new(&root).join("sql").join(&name);
        writeln!(
            out,
            "    Migration {{ version: {number}, name: {name:?}, sql: include_str!({path:?}) }},",
            path = path.display().to_string()
        )
        .unwrap();
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("migrations.rs");
    std::fs::write(dest, out).unwrap();
}
