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
