//! libFuzzer entry point of the `kafka_key` target; the body and its properties are
//! `rtu_fuzz::targets::kafka_key` (fuzz/src/targets.rs, docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rtu_fuzz::targets::kafka_key(data));
