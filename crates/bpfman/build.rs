//! Compiles the eBPF objects the library embeds (feature probes) with clang.
use std::path::PathBuf;
use std::process::Command;

/// (source under bpf/, object name in OUT_DIR)
const OBJECTS: &[(&str, &str)] = &[
    ("probe/probe.bpf.c", "probe.bpf.o"),
    ("dispatcher/xdp_dispatcher.bpf.c", "xdp_dispatcher.bpf.o"),
    ("dispatcher/tc_dispatcher.bpf.c", "tc_dispatcher.bpf.o"),
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
    for (src, obj) in OBJECTS {
        let src = root.join(src);
        println!("cargo:rerun-if-changed={}", src.display());
        let status = Command::new(std::env::var("CLANG").unwrap_or_else(|_| "clang".into()))
            .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
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
