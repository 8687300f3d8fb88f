//! libFuzzer entry point of the `adapter_debezium` target; the body and its properties are
//! `rtu_fuzz::targets::adapter_debezium` (fuzz/src/targets.rs, docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rtu_fuzz::targets::adapter_debezium(data));
