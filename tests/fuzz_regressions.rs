//! The fuzz targets on stable (docs/fuzzing.md): every seed of `fuzz/corpus-seed/<target>/`
//! and every crash kept in `fuzz/regressions/<target>/` goes through the same target body
//! libFuzzer runs (`fuzz/src/targets.rs`), so a crash found once stays fixed and the seeds
//! keep meeting the targets' properties without a nightly toolchain.

use std::path::{Path, PathBuf};

#[path = "../fuzz/src/targets.rs"]
mod targets;

/// The files of `fuzz/<kind>/<target>/`, sorted; none when the directory does not exist.
fn inputs(kind: &str, target: &str) -> std::io::Result<Vec<PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(Vec::new()) };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.is_file() && path.file_name().is_some_and(|n| n != "README.md") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Runs `target` on each input; the names of those that panicked.
fn failures(target: targets::Target, files: &[PathBuf]) -> std::io::Result<Vec<String>> {
    let mut failed = Vec::new();
    for file in files {
        let data = std::fs::read(file)?;
        if std::panic::catch_unwind(|| target(&data)).is_err() {
            failed.push(file.display().to_string());
        }
    }
    Ok(failed)
}

#[test]
fn every_target_has_seeds() {
    for (name, _) in targets::TARGETS {
        assert!(
            !inputs("corpus-seed", name).unwrap().is_empty(),
            "no seeds for {name}: scripts/fuzz.sh seeds"
        );
    }
}

#[test]
fn seeds_and_kept_crashes_pass_every_target() {
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, target) in targets::TARGETS {
        let mut files = inputs("corpus-seed", name).unwrap();
        files.extend(inputs("regressions", name).unwrap());
        ran += files.len();
        failed
            .extend(failures(target, &files).unwrap().into_iter().map(|f| format!("{name}: {f}")));
    }
    assert!(ran > 0, "no input found under fuzz/");
    assert!(failed.is_empty(), "{} of {ran} inputs failed:\n{}", failed.len(), failed.join("\n"));
}

#[test]
fn a_record_input_is_the_key_a_nul_and_the_value() {
    let record = targets::record(b"{\"id\":1}\0{\"id\":2}");
    assert_eq!((record.key, record.value), (Some(&b"{\"id\":1}"[..]), Some(&b"{\"id\":2}"[..])));
    let record = targets::record(b"{\"id\":2}");
    assert_eq!((record.key, record.value), (None, Some(&b"{\"id\":2}"[..])));
    let record = targets::record(b"\0");
    assert_eq!((record.key, record.value), (None, None));
}

#[test]
fn a_panicking_target_is_a_failure() {
    let this = Path::new(env!("CARGO_MANIFEST_DIR")).join(file!());
    let this = std::slice::from_ref(&this);
    assert_eq!(failures(|_| panic!("a violated property"), this).unwrap().len(), 1);
    assert!(failures(|_| {}, this).unwrap().is_empty());
}
