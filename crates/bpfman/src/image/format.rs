//! The bytecode image format: OCI and Docker v2 manifests and indexes, the image config
//! and its `io.ebpf.*` labels, the bytecode layer, and what an ELF object declares.
//! Pure functions over bytes: no network, no files.

use std::collections::BTreeMap;
use std::io::Read;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::model::ProgramKind;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Every manifest media type a pull accepts.
pub const MANIFEST_TYPES: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

pub const LABEL_PROGRAMS: &str = "io.ebpf.programs";
pub const LABEL_MAPS: &str = "io.ebpf.maps";
pub const LABEL_PROGRAM_TYPE: &str = "io.ebpf.program_type";
pub const LABEL_FUNCTION: &str = "io.ebpf.bpf_function_name";

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Checks that `digest` is a well-formed sha256 digest and returns its hex part.
pub fn digest_hex(digest: &str) -> Result<&str> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| {
        Error::invalid(format!(
            "digest '{digest}' is not sha256:<64 hex digits> (only sha256 is supported)"
        ))
    })?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(Error::invalid(format!(
            "digest '{digest}' is not sha256:<64 lowercase hex digits>"
        )));
    }
    Ok(hex)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    pub fn of(media_type: &str, data: &[u8]) -> Self {
        Self {
            media_type: media_type.to_string(),
            digest: sha256_digest(data),
            size: data.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
        }
    }
}

/// An image manifest (OCI or Docker v2 schema 2).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What a manifest document turned out to be.
#[derive(Debug, Clone)]
pub enum ManifestKind {
    Image(Manifest),
    Index(Index),
}

/// Parses a manifest or index, by its media type when it has one, else by its shape.
pub fn parse_manifest(raw: &[u8], what: &str) -> Result<ManifestKind> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        schema_version: Option<u32>,
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let p: Probe = serde_json::from_slice(raw)
        .map_err(|e| Error::invalid(format!("{what}: the manifest is not JSON: {e}")))?;
    if p.schema_version != Some(2) {
        return Err(Error::invalid(format!(
            "{what}: manifest schemaVersion {:?} is not supported (only 2: OCI or Docker v2)",
            p.schema_version
        )));
    }
    let is_index = match p.media_type.as_deref() {
        Some(OCI_INDEX) | Some(DOCKER_LIST) => true,
        Some(OCI_MANIFEST) | Some(DOCKER_MANIFEST) => false,
        Some(other) => {
            return Err(Error::invalid(format!(
                "{what}: manifest media type '{other}' is not an image manifest or index"
            )));
        }
        None => p.manifests.is_some(),
    };
    if is_index {
        serde_json::from_slice(raw)
            .map(ManifestKind::Index)
            .map_err(|e| Error::invalid(format!("{what}: malformed image index: {e}")))
    } else {
        serde_json::from_slice(raw)
            .map(ManifestKind::Image)
            .map_err(|e| Error::invalid(format!("{what}: malformed image manifest: {e}")))
    }
}

/// The host's architecture in OCI (GOARCH) words.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "arm" => "arm",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        other => other,
    }
}

/// Picks the index entry for this host (linux/`host_arch()`), or says which platforms exist.
pub fn choose_platform<'a>(index: &'a Index, what: &str) -> Result<&'a Descriptor> {
    let arch = host_arch();
    let mut seen = Vec::new();
    for d in &index.manifests {
        if let Some(p) = &d.platform {
            if p.architecture == arch && (p.os == "linux" || p.os.is_empty()) {
                return Ok(d);
            }
            seen.push(format!("{}/{}", p.os, p.architecture));
        }
    }
    // An index without platforms (an artifact index) with one entry: take it.
    if index.manifests.len() == 1 && index.manifests[0].platform.is_none() {
        return Ok(&index.manifests[0]);
    }
    Err(Error::invalid(format!(
        "{what} has no image for this host (linux/{arch}); it has: {}. Build one with \
         `bpfman image build --bytecode-for {arch}=FILE.o`",
        if seen.is_empty() {
            "no platforms".to_string()
        } else {
            seen.join(", ")
        }
    )))
}

/// The parts of an image config bpfman reads.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerConfig {
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

pub fn parse_config(raw: &[u8], what: &str) -> Result<ImageConfig> {
    serde_json::from_slice(raw)
        .map_err(|e| Error::invalid(format!("{what}: the image config is not valid JSON: {e}")))
}

/// What the image says it holds: function -> program type, map -> map type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Labels {
    pub programs: BTreeMap<String, String>,
    pub maps: BTreeMap<String, String>,
}

/// Program types a label may name (upstream's words).
pub fn program_type_known(t: &str) -> bool {
    ProgramKind::ALL.iter().any(|k| k.as_str() == t)
}

fn json_object_label(
    labels: &BTreeMap<String, String>,
    key: &str,
) -> Result<Option<BTreeMap<String, String>>> {
    match labels.get(key) {
        None => Ok(None),
        Some(v) => serde_json::from_str::<BTreeMap<String, String>>(v)
            .map(Some)
            .map_err(|e| {
                Error::invalid(format!(
                    "image label {key} is not a JSON object of names to types ({e}): {v:.120}"
                ))
            }),
    }
}

/// Reads the `io.ebpf.*` labels, new and legacy forms.
pub fn parse_labels(labels: &BTreeMap<String, String>) -> Result<Labels> {
    let mut out = Labels {
        programs: json_object_label(labels, LABEL_PROGRAMS)?.unwrap_or_default(),
        maps: json_object_label(labels, LABEL_MAPS)?.unwrap_or_default(),
    };
    if let (Some(t), Some(f)) = (labels.get(LABEL_PROGRAM_TYPE), labels.get(LABEL_FUNCTION)) {
        out.programs.entry(f.clone()).or_insert_with(|| t.clone());
    }
    for (f, t) in &out.programs {
        if f.is_empty() {
            return Err(Error::invalid(
                "image label io.ebpf.programs names an empty function",
            ));
        }
        if !program_type_known(t) {
            return Err(Error::invalid(format!(
                "image label io.ebpf.programs gives function '{f}' the unknown type '{t}' \
                 (known: xdp, tc, tcx, tracepoint, kprobe, kretprobe, uprobe, uretprobe, fentry, fexit)"
            )));
        }
    }
    Ok(out)
}

/// The label set for an image holding `labels`.
pub fn labels_to_map(labels: &Labels) -> Result<BTreeMap<String, String>> {
    let enc = |m: &BTreeMap<String, String>| {
        serde_json::to_string(m).map_err(|e| Error::internal(format!("encoding labels: {e}")))
    };
    let mut out = BTreeMap::new();
    out.insert(LABEL_PROGRAMS.to_string(), enc(&labels.programs)?);
    out.insert(LABEL_MAPS.to_string(), enc(&labels.maps)?);
    Ok(out)
}

/// What an ELF object holds, as an image label would say it.
#[derive(Debug, Clone, Default)]
pub struct ElfInfo {
    pub labels: Labels,
    pub little_endian: bool,
    /// XDP functions whose section is `xdp.frags` (they accept multi-buffer packets).
    pub xdp_frags: std::collections::BTreeSet<String>,
}

fn map_type_name(t: u32) -> String {
    const NAMES: &[&str] = &[
        "unspec",
        "hash",
        "array",
        "prog_array",
        "perf_event_array",
        "percpu_hash",
        "percpu_array",
        "stack_trace",
        "cgroup_array",
        "lru_hash",
        "lru_percpu_hash",
        "lpm_trie",
        "array_of_maps",
        "hash_of_maps",
        "devmap",
        "sockmap",
        "cpumap",
        "xskmap",
        "sockhash",
        "cgroup_storage",
        "reuseport_sockarray",
        "percpu_cgroup_storage",
        "queue",
        "stack",
        "sk_storage",
        "devmap_hash",
        "struct_ops",
        "ringbuf",
        "inode_storage",
        "task_storage",
        "bloom_filter",
        "user_ringbuf",
        "cgrp_storage",
        "arena",
    ];
    NAMES
        .get(t as usize)
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("type_{t}"))
}

/// Reads an eBPF ELF object: its programs (function -> type from the section) and maps.
pub fn inspect_elf(bytes: &[u8], what: &str) -> Result<ElfInfo> {
    use aya_obj::ProgramSection as S;
    if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" {
        return Err(Error::invalid(format!(
            "{what} is not an ELF object (the first layer must hold the eBPF .o file)"
        )));
    }
    // e_ident[EI_DATA]: 1 little endian, 2 big endian. e_machine 247 = EM_BPF.
    let little_endian = bytes[5] == 1;
    if little_endian != cfg!(target_endian = "little") {
        return Err(Error::invalid(format!(
            "{what} is a {}-endian eBPF object; this host is {}-endian. Build the image with \
             bytecode for this host (clang -target bpf{})",
            if little_endian { "little" } else { "big" },
            if cfg!(target_endian = "little") {
                "little"
            } else {
                "big"
            },
            if cfg!(target_endian = "little") {
                "el"
            } else {
                "eb"
            },
        )));
    }
    let machine = if little_endian {
        u16::from_le_bytes([bytes[18], bytes[19]])
    } else {
        u16::from_be_bytes([bytes[18], bytes[19]])
    };
    if machine != 247 {
        return Err(Error::invalid(format!(
            "{what} is an ELF file for machine {machine}, not eBPF (EM_BPF = 247)"
        )));
    }
    // aya-obj panics on some malformed objects (found by fuzzing): contain it.
    let obj = std::panic::catch_unwind(|| aya_obj::Object::parse(bytes))
        .map_err(|_| {
            Error::invalid(format!(
                "{what}: not a valid eBPF object (its symbols or sections are inconsistent)"
            ))
        })?
        .map_err(|e| Error::invalid(format!("{what}: not a valid eBPF object: {e}")))?;
    let mut labels = Labels::default();
    let mut xdp_frags = std::collections::BTreeSet::new();
    for (name, p) in &obj.programs {
        if matches!(p.section, S::Xdp { frags: true, .. }) {
            xdp_frags.insert(name.clone());
        }
        let t = match &p.section {
            S::Xdp { .. } => ProgramKind::Xdp,
            S::SchedClassifier => ProgramKind::Tc,
            S::TracePoint => ProgramKind::Tracepoint,
            S::KProbe => ProgramKind::Kprobe,
            S::KRetProbe => ProgramKind::Kretprobe,
            S::UProbe { .. } => ProgramKind::Uprobe,
            S::URetProbe { .. } => ProgramKind::Uretprobe,
            S::FEntry { .. } => ProgramKind::Fentry,
            S::FExit { .. } => ProgramKind::Fexit,
            S::Lsm { .. } => ProgramKind::Lsm,
            _ => continue,
        };
        labels.programs.insert(name.clone(), t.as_str().to_string());
    }
    for (name, m) in &obj.maps {
        if name.starts_with('.') {
            continue; // global data sections (.data, .rodata, .bss)
        }
        labels
            .maps
            .insert(name.clone(), map_type_name(m.map_type()));
    }
    Ok(ElfInfo {
        labels,
        little_endian,
        xdp_frags,
    })
}

/// Checks the image's labels against its ELF: every labelled function must be there.
pub fn check_labels_against_elf(labels: &Labels, elf: &ElfInfo, what: &str) -> Result<()> {
    for (f, t) in &labels.programs {
        match elf.labels.programs.get(f) {
            None => {
                return Err(Error::invalid(format!(
                    "{what}: label io.ebpf.programs names function '{f}', which the bytecode \
                     does not contain (it has: {})",
                    elf.labels
                        .programs
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            Some(actual) => {
                let compatible = actual == t
                    || (actual == "tc" && t == "tcx")
                    || (actual.starts_with('k') && t.starts_with('k'))
                    || (actual.starts_with('u') && t.starts_with('u'));
                if !compatible {
                    return Err(Error::invalid(format!(
                        "{what}: label io.ebpf.programs says '{f}' is {t}, but its ELF section \
                         makes it {actual}"
                    )));
                }
            }
        }
    }
    for m in labels.maps.keys() {
        if !elf.labels.maps.contains_key(m) {
            return Err(Error::invalid(format!(
                "{what}: label io.ebpf.maps names map '{m}', which the bytecode does not define"
            )));
        }
    }
    Ok(())
}

/// Extracts the bytecode from a layer: gunzip (for gzip media types), untar, first
/// regular file. Upstream's rule: the first entry is the ELF. At most `limit` bytes.
pub fn extract_bytecode(layer: &[u8], media_type: &str, limit: u64, what: &str) -> Result<Vec<u8>> {
    let gz = matches!(media_type, OCI_LAYER_GZIP | DOCKER_LAYER_GZIP)
        || (media_type != OCI_LAYER_TAR && layer.starts_with(&[0x1f, 0x8b]));
    let reader: Box<dyn Read + '_> = if gz {
        if !layer.starts_with(&[0x1f, 0x8b]) {
            return Err(Error::invalid(format!(
                "{what}: the layer is declared {media_type} but is not gzip data"
            )));
        }
        Box::new(flate2::read::GzDecoder::new(layer))
    } else {
        Box::new(layer)
    };
    let mut archive = tar::Archive::new(reader.take(limit.saturating_mul(2).max(1 << 20)));
    let entries = archive
        .entries()
        .map_err(|e| Error::invalid(format!("{what}: the layer is not a tar archive: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| {
            Error::invalid(format!(
                "{what}: the layer is truncated or not a valid tar{} archive: {e}",
                if gz { ".gz" } else { "" }
            ))
        })?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let size = entry.header().size().unwrap_or(0);
        if size > limit {
            return Err(Error::invalid(format!(
                "{what}: the bytecode file is {size} bytes, over the limit of {limit} \
                 ([images] max_image_size)"
            )));
        }
        let mut out = Vec::with_capacity(size as usize);
        let mut entry = entry;
        entry.read_to_end(&mut out).map_err(|e| {
            Error::invalid(format!(
                "{what}: the layer is truncated or corrupt (reading the bytecode file): {e}"
            ))
        })?;
        if (out.len() as u64) != size {
            return Err(Error::invalid(format!(
                "{what}: the layer is truncated: the bytecode file has {} of {size} bytes",
                out.len()
            )));
        }
        return Ok(out);
    }
    Err(Error::invalid(format!(
        "{what}: the layer holds no file; it must contain the eBPF .o file"
    )))
}

/// A deterministic tar.gz layer holding one file (mode 0644, mtime 0, root owner).
pub fn make_layer(file_name: &str, bytes: &[u8]) -> Result<Vec<u8>> {
    make_layer_with_tar(file_name, bytes).map(|(gz, _)| gz)
}

/// Like [`make_layer`], also returning the uncompressed tar (its digest is the diff id).
pub fn make_layer_with_tar(file_name: &str, bytes: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, file_name, bytes)
        .map_err(|e| Error::internal(format!("building the layer tar: {e}")))?;
    let tar = tar
        .into_inner()
        .map_err(|e| Error::internal(format!("building the layer tar: {e}")))?;
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &tar)
        .map_err(|e| Error::internal(format!("compressing the layer: {e}")))?;
    let gz = gz
        .finish()
        .map_err(|e| Error::internal(format!("compressing the layer: {e}")))?;
    Ok((gz, tar))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_new_and_legacy() {
        let mut l = BTreeMap::new();
        l.insert(LABEL_PROGRAMS.into(), r#"{"pass":"xdp"}"#.into());
        l.insert(LABEL_PROGRAM_TYPE.into(), "tc".into());
        l.insert(LABEL_FUNCTION.into(), "stats".into());
        let p = parse_labels(&l).ok().unwrap_or_default();
        assert_eq!(p.programs.get("pass").map(String::as_str), Some("xdp"));
        assert_eq!(p.programs.get("stats").map(String::as_str), Some("tc"));
        l.insert(LABEL_MAPS.into(), "not json".into());
        let e = parse_labels(&l)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("io.ebpf.maps"), "{e}");
        l.remove(LABEL_MAPS);
        l.insert(LABEL_PROGRAMS.into(), r#"{"pass":"socket"}"#.into());
        let e = parse_labels(&l)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("unknown type 'socket'"), "{e}");
    }

    #[test]
    fn layer_round_trip_and_damage() {
        let layer = make_layer("prog.o", b"\x7fELFabc").unwrap_or_default();
        let out = extract_bytecode(&layer, OCI_LAYER_GZIP, 1 << 20, "t").ok();
        assert_eq!(out.as_deref(), Some(&b"\x7fELFabc"[..]));
        // Deterministic: same input, same digest.
        assert_eq!(
            sha256_digest(&layer),
            sha256_digest(&make_layer("prog.o", b"\x7fELFabc").unwrap_or_default())
        );
        let e = extract_bytecode(&layer[..layer.len() / 2], OCI_LAYER_GZIP, 1 << 20, "t")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("truncated") || e.contains("corrupt"), "{e}");
        let e = extract_bytecode(b"plain text", OCI_LAYER_GZIP, 1 << 20, "t")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("not gzip"), "{e}");
        let e = extract_bytecode(&layer, OCI_LAYER_GZIP, 3, "t")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("over the limit"), "{e}");
    }

    #[test]
    fn digests_and_platforms() {
        assert!(digest_hex("sha256:abc").is_err());
        assert!(digest_hex(&sha256_digest(b"x")).is_ok());
        let idx = Index {
            schema_version: 2,
            media_type: Some(OCI_INDEX.into()),
            manifests: vec![Descriptor {
                platform: Some(Platform {
                    architecture: "s390x-nope".into(),
                    os: "linux".into(),
                    variant: None,
                }),
                ..Descriptor::of(OCI_MANIFEST, b"{}")
            }],
            annotations: BTreeMap::new(),
        };
        let e = choose_platform(&idx, "img")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("linux/s390x-nope"), "{e}");
        assert!(parse_manifest(br#"{"schemaVersion":1}"#, "m").is_err());
    }
}
