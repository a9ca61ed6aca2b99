//! Replays every input kept under fuzz/regressions/<target>/ (crashes the fuzzers found,
//! once fixed, and seeds worth keeping) through the same entry points the fuzz targets
//! use, on every `cargo test`, with the stable toolchain.

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(target);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if let Ok(data) = std::fs::read(e.path()) {
            f(&data);
            n += 1;
        }
    }
    n
}

#[test]
fn fuzz_regressions_do_not_panic() {
    let mut total = 0;
    total += replay("image_format", bpfman::fuzzing::image_format);
    total += replay("config", bpfman::fuzzing::config);
    total += replay("cosign", bpfman::fuzzing::cosign);
    total += replay("statics", bpfman::fuzzing::statics);
    // The edge cases every target must survive, whatever the corpus holds.
    for input in [
        &b""[..],
        b"\x7fELF",
        b"\x1f\x8b\x08",
        b"{\"schemaVersion\":2}",
        b"[[program]]",
    ] {
        bpfman::fuzzing::image_format(input);
        bpfman::fuzzing::config(input);
        bpfman::fuzzing::cosign(input);
        bpfman::fuzzing::statics(input);
    }
    eprintln!("replayed {total} kept fuzz input(s)");
}
