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
    total += replay("grant_paths", bpfman::fuzzing::grant_paths);
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
        bpfman::fuzzing::grant_paths(input);
    }
    eprintln!("replayed {total} kept fuzz input(s)");
}

/// The grant_paths properties over many generated inputs built from the words that
/// matter (every link of the fixed tree, `.`, `..`, wildcards, slashes), so the path
/// matcher is exercised on every `cargo test`, not only under cargo fuzz.
#[test]
fn grant_paths_properties_hold_on_generated_inputs() {
    let words = [
        "/", "/", "/", "a", "..", ".", "*", "?", "abs", "rel", "dir", "reldir", "sub", "up1",
        "up2", "ok", "subup", "loop", "magic", "secret.o", "a.o", "b.o", "etc", "opt",
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut n = 0;
    for _ in 0..20_000 {
        let mut make = |len: u64| -> String {
            (0..(next() % len))
                .map(|_| words[(next() % words.len() as u64) as usize])
                .collect::<Vec<_>>()
                .join("")
        };
        let pattern = format!("/{}", make(5));
        let path = make(8);
        bpfman::fuzzing::grant_paths(format!("{pattern}\n{path}").as_bytes());
        n += 1;
    }
    eprintln!("checked {n} generated path/glob inputs");
}
