//! libFuzzer entry point of the `adapter_script` target; the body and its properties are
//! `rtu_fuzz::targets::adapter_script` (fuzz/src/targets.rs, docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rtu_fuzz::targets::adapter_script(data));
