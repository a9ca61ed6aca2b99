#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    bpfman::fuzzing::grant_paths(data);
});
