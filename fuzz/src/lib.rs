//! The fuzz targets of rtu (docs/fuzzing.md) as a library: `fuzz_targets/*.rs` hand
//! libFuzzer's inputs to [`targets`], the one file that holds every target's body, which
//! tests/fuzz_regressions.rs also compiles on stable to replay seeds and kept crashes.
#![forbid(unsafe_code)]

pub mod targets;
