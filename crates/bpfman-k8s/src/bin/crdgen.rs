//! Prints the five bpfman.io CRDs as YAML, generated from the Rust types.
//!
//! `cargo run --bin crdgen` prints them all as one multi-document stream;
//! `cargo run --bin crdgen -- --out-dir deploy/kubernetes/crds` writes one file per CRD;
//! `--listing` prints the path-by-path facts the compatibility test compares.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut out_dir: Option<PathBuf> = None;
    let mut listing = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out-dir" => match args.next() {
                Some(d) => out_dir = Some(PathBuf::from(d)),
                None => {
                    eprintln!("crdgen: --out-dir needs a directory");
                    return ExitCode::from(2);
                }
            },
            "--listing" => listing = true,
            "-h" | "--help" => {
                println!("usage: crdgen [--out-dir DIR | --listing]");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("crdgen: unknown argument {other:?} (try --help)");
                return ExitCode::from(2);
            }
        }
    }
    for (file, crd) in bpfman_k8s::crd::crds() {
        if listing {
            for line in bpfman_k8s::crd::listing(&crd) {
                println!("{line}");
            }
            println!();
            continue;
        }
        let yaml = match bpfman_k8s::crd::to_yaml(&crd) {
            Ok(y) => y,
            Err(e) => {
                eprintln!("crdgen: cannot render {file}: {e}");
                return ExitCode::FAILURE;
            }
        };
        match &out_dir {
            Some(dir) => {
                let path = dir.join(file);
                if let Err(e) = std::fs::write(&path, yaml) {
                    eprintln!("crdgen: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            None => print!("{yaml}"),
        }
    }
    ExitCode::SUCCESS
}
