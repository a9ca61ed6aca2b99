//! Entry points for the fuzz targets in `fuzz/` (cargo fuzz) and for the regression test
//! that replays their findings on every `cargo test`. Each takes arbitrary bytes and must
//! return (with an error inside, usually) without panicking.

use std::collections::BTreeMap;

use crate::image::format;
use crate::image::registry;
use crate::image::sign;

/// Image parsing: manifests, configs, labels, layers, ELF objects.
pub fn image_format(data: &[u8]) {
    let _ = format::parse_manifest(data, "fuzz");
    if let Ok(c) = format::parse_config(data, "fuzz") {
        let labels = c.config.and_then(|c| c.labels).unwrap_or_default();
        if let Ok(l) = format::parse_labels(&labels) {
            let _ = format::labels_to_map(&l);
        }
    }
    if let Ok(m) = serde_json::from_slice::<BTreeMap<String, String>>(data) {
        let _ = format::parse_labels(&m);
    }
    for media in [
        format::OCI_LAYER_GZIP,
        format::OCI_LAYER_TAR,
        "unknown/type",
    ] {
        let _ = format::extract_bytecode(data, media, 1 << 20, "fuzz");
    }
    if let Ok(info) = format::inspect_elf(data, "fuzz") {
        let _ = format::check_labels_against_elf(&info.labels, &info, "fuzz");
    }
    let _ = format::digest_hex(&String::from_utf8_lossy(data));
}

/// The daemon's config file, policy rules included.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::Config::parse(text, "fuzz");
    }
}

/// Static program files (programs.d).
pub fn statics(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::statics::parse(text, "fuzz");
    }
}

/// Keys, signatures, signed payloads, credentials and references.
pub fn cosign(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = sign::parse_public_key(&text, "fuzz");
    let _ = sign::parse_private_key(&text, b"", "fuzz");
    let _ = registry::Credentials::from_base64(&text);
    let _ = registry::parse_reference(&text);
    // A payload checked against a fixed key: the signature fails, the JSON is not reached;
    // then the claims parser alone.
    let key = p256::ecdsa::SigningKey::from_bytes(&[7u8; 32].into());
    if let Ok(k) = key {
        let sig = sign::sign(&k, data);
        let _ = sign::verify_one(
            k.verifying_key(),
            data,
            &sig,
            "127.0.0.1:5000/fuzz",
            "sha256:0000000000000000000000000000000000000000000000000000000000000000",
        );
        let _ = sign::verify_bytes(k.verifying_key(), data, &text);
    }
}

/// A fixed tree of files and links for [`grant_paths`]: a granted directory whose
/// entries lead inside, outside (absolute and relative symlinks, a link to a directory
/// outside, a magic link), and in loops.
fn grant_tree() -> Option<&'static std::path::Path> {
    use std::os::unix::fs::symlink;
    static TREE: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    TREE.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("bpfman-fuzz-tree-{}", std::process::id()));
        let g = base.join("granted");
        std::fs::create_dir_all(g.join("sub")).ok()?;
        std::fs::create_dir_all(base.join("outside")).ok()?;
        std::fs::write(g.join("a.o"), b"\x7fELF in").ok()?;
        std::fs::write(g.join("sub/b.o"), b"\x7fELF in").ok()?;
        std::fs::write(base.join("outside/secret.o"), b"\x7fELF out").ok()?;
        let links: [(&str, std::path::PathBuf); 8] = [
            ("abs", base.join("outside/secret.o")),
            ("rel", "../outside/secret.o".into()),
            ("dir", base.join("outside")),
            ("reldir", "../outside".into()),
            ("ok", "a.o".into()),
            ("subup", "sub/../a.o".into()),
            ("loop", "loop".into()),
            ("magic", "/proc/self/root".into()),
        ];
        for (name, to) in links {
            let _ = symlink(&to, g.join(name));
        }
        let _ = symlink("../../outside/secret.o", g.join("sub/up2"));
        let _ = symlink("../a.o", g.join("sub/up1"));
        Some(base)
    })
    .as_deref()
}

/// The path and glob matchers of the policy, and confined opens. Properties checked
/// (a violation panics, which the fuzzer reports):
/// * a glob match never lets `*` or `?` cross `/` (same number of `/` on both sides);
/// * an accepted path lies under the directory the grant names for it, component-wise;
/// * a file opened `Beneath` the granted directory of the fixed tree really is inside
///   it once every link is resolved.
pub fn grant_paths(data: &[u8]) {
    use crate::access::{self, Confine, Identity, Limits};
    use std::path::{Path, PathBuf};
    let text = String::from_utf8_lossy(data);
    let (pattern, path) = text.split_once('\n').unwrap_or((&text, ""));
    if crate::policy::glob(pattern, path) {
        assert_eq!(
            pattern.matches('/').count(),
            path.matches('/').count(),
            "glob {pattern:?} matched {path:?} across '/'"
        );
    }
    // Patterns the config would refuse (see Config::parse) are not grants.
    if access::check_path(path, "fuzz").is_ok() && access::check_path(pattern, "fuzz").is_ok() {
        let dirs = vec![PathBuf::from(pattern)];
        if let Some(d) = crate::policy::granted_dir(&dirs, Path::new(path)) {
            assert!(Path::new(path).starts_with(d), "{path:?} not under {d:?}");
        }
        if let Some(d) = crate::policy::uprobe_dir(&[pattern.to_string()], path) {
            assert!(Path::new(path).starts_with(&d), "{path:?} not under {d:?}");
        }
    }
    // Resolution: `path` taken relative to the granted directory of the tree.
    let Some(base) = grant_tree() else { return };
    let granted = base.join("granted");
    let full = format!("{}/{}", granted.display(), path.trim_start_matches('/'));
    if access::check_path(&full, "fuzz").is_err() {
        return;
    }
    let me = Identity {
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        groups: vec![nix::unistd::getegid().as_raw()],
    };
    let limits = Limits {
        max_bytes: 1 << 16,
        deadline: std::time::Duration::from_secs(5),
    };
    if let Ok(o) = access::open(
        &me,
        Path::new(&full),
        &Confine::Beneath(granted.clone()),
        limits,
    ) && let (Ok(real), Ok(root)) = (std::fs::read_link(o.fd_path()), granted.canonicalize())
    {
        assert!(
            real.starts_with(&root),
            "{full:?} opened {real:?}, outside {root:?}"
        );
    }
}
