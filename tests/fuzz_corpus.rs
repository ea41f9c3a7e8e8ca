//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/*`)
//! through the same entry points the cargo-fuzz harnesses call, so each
//! `cargo test` re-checks the corpus without libFuzzer or a nightly
//! compiler. A target without a corpus fails the test: CI would otherwise
//! fuzz it from nothing and nobody would notice.

use std::path::Path;

#[test]
fn every_target_replays_its_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut failures = Vec::new();
    for (target, run) in umbra::fuzzing::TARGETS {
        let dir = root.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| {
                panic!(
                    "no corpus for fuzz target {target} at {}: {e}",
                    dir.display()
                )
            })
            .map(|e| e.expect("corpus directory entry").path())
            .collect();
        files.sort();
        assert!(
            !files.is_empty(),
            "the corpus of fuzz target {target} is empty"
        );
        for file in files {
            let data = std::fs::read(&file).expect("corpus file");
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                failures.push(file.display().to_string());
            }
        }
    }
    assert!(
        failures.is_empty(),
        "corpus files that fail their target: {failures:#?}"
    );
}
