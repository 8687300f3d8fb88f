//! `docs/code-map.md` lists every source file under `src/`, and only files that exist.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn sources(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.insert(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
        }
    }
}

/// The `src/...rs` paths written in backticks on the page.
fn listed(page: &str) -> BTreeSet<String> {
    page.split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("src/") && s.ends_with(".rs"))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_code_map_lists_every_source_file_and_nothing_else() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = BTreeSet::new();
    sources(&root.join("src"), &root, &mut files);
    let page = std::fs::read_to_string(root.join("docs/code-map.md")).unwrap();
    let listed = listed(&page);
    let missing: Vec<_> = files.difference(&listed).collect();
    let gone: Vec<_> = listed.difference(&files).collect();
    assert!(missing.is_empty(), "docs/code-map.md does not list {missing:?}");
    assert!(gone.is_empty(), "docs/code-map.md lists files that do not exist: {gone:?}");
}

#[test]
fn listed_paths_are_read_between_backticks_only() {
    let page = "| `src/a.rs` | x `src/b.rs` → src/c.rs `src/` `tests/d.rs` |";
    assert_eq!(listed(page), ["src/a.rs", "src/b.rs"].map(String::from).into());
}
