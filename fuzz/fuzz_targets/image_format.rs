#![no_main]
// aya-obj 0.3.0 panics on some malformed objects (found here: obj.rs:675, a symbol
// range outside its section); bpfman contains that panic with catch_unwind, which the
// stable regression test checks. libFuzzer's panic hook would count it as a crash even
// when caught, so panics raised inside aya-obj are let through to that catch; any other
// panic still aborts and is reported.
libfuzzer_sys::fuzz_target!(
    init: {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.location().is_some_and(|l| l.file().contains("aya-obj")) {
                return;
            }
            default(info);
            std::process::abort();
        }));
    },
    |data: &[u8]| {
        bpfman::fuzzing::image_format(data);
    }
);
