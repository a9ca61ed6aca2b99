//! Compiles the eBPF objects the library embeds (feature probes, dispatchers) with clang.
use std::path::PathBuf;
use std::process::Command;

/// (source under bpf/, object name in OUT_DIR, extra clang flags)
///
/// The dispatchers are built for BPF ISA v3 (32-bit ALU and jumps, Linux 5.1+; freplace
/// needs 5.10 anyway): the chain check after each slot is then `w1 >>= w0; w1 &= 1` with
/// no 64-bit zero-extension of the return code, 9 instructions per slot instead of 13
/// (libxdp's dispatcher, built for v1, has 14).
const OBJECTS: &[(&str, &str, &[&str])] = &[
    ("probe/probe.bpf.c", "probe.bpf.o", &[]),
    (
        "dispatcher/xdp_dispatcher.bpf.c",
        "xdp_dispatcher.bpf.o",
        &["-mcpu=v3"],
    ),
    (
        "dispatcher/tc_dispatcher.bpf.c",
        "tc_dispatcher.bpf.o",
        &["-mcpu=v3"],
    ),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../bpf");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let arch = std::env::consts::ARCH;
    let arch_inc = format!("/usr/include/{arch}-linux-gnu");
    let target_arch = match arch {
        "x86_64" => "x86",
        "aarch64" => "arm64",
        other => other,
    };
    for (src, obj, extra) in OBJECTS {
        let src = root.join(src);
        println!("cargo:rerun-if-changed={}", src.display());
        let status = Command::new(std::env::var("CLANG").unwrap_or_else(|_| "clang".into()))
            .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
            .args(extra.iter())
            .arg(format!("-D__TARGET_ARCH_{target_arch}"))
            .arg(format!("-I{arch_inc}"))
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(out.join(obj))
            .status()
            .map_err(|e| {
                format!(
                    "running clang to build {}: {e}; install clang and libbpf-dev",
                    src.display()
                )
            })?;
        if !status.success() {
            return Err(format!(
                "clang failed on {} (is libbpf-dev installed?)",
                src.display()
            )
            .into());
        }
    }
    Ok(())
}
