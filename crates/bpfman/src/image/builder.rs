//! `bpfman image build`: makes a bytecode image (one per architecture, an index when
//! several) straight from ELF objects, with no container runtime, into an OCI layout.
//! Labels come from the ELF unless the caller gives them (then they are checked against
//! it). The output is deterministic: the same objects give the same digests.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::image::format::{
    self, Descriptor, Index, Labels, Manifest, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST,
    Platform, check_labels_against_elf, inspect_elf, labels_to_map,
};
use crate::image::layout::Layout;

/// One object to put in the image.
pub struct BuildInput {
    /// OCI architecture (amd64, arm64 ...); None: this host's, single-arch image.
    pub arch: Option<String>,
    pub file_name: String,
    pub bytes: Vec<u8>,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Built {
    pub digest: String,
    pub media_type: String,
    pub labels: Labels,
    pub platforms: Vec<String>,
}

fn build_one(
    layout: &Layout,
    input: &BuildInput,
    labels: Option<&Labels>,
) -> Result<(Descriptor, Labels)> {
    let what = format!("bytecode {}", input.file_name);
    // An image for another architecture may hold big-endian bytecode: only check the
    // ELF fully when it is for this host.
    let elf = inspect_elf(&input.bytes, &what);
    let labels = match (elf, labels) {
        (Ok(elf), Some(l)) => {
            check_labels_against_elf(l, &elf, &what)?;
            l.clone()
        }
        (Ok(elf), None) => elf.labels,
        (Err(e), _) if input.arch.is_none() => return Err(e),
        (Err(_), Some(l)) => l.clone(),
        (Err(e), None) => {
            return Err(e.context(format!(
                "reading labels from {} (give --programs and --maps for foreign bytecode)",
                input.file_name
            )));
        }
    };
    if labels.programs.is_empty() {
        return Err(Error::invalid(format!(
            "{what} holds no program bpfman can load (xdp, tc, tracepoint, kprobe, uprobe, lsm, \
             fentry, fexit sections)"
        )));
    }
    let arch = input
        .arch
        .clone()
        .unwrap_or_else(|| format::host_arch().to_string());
    let (layer, tar) = format::make_layer_with_tar(&input.file_name, &input.bytes)?;
    let diff_id = format::sha256_digest(&tar);
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Labels": labels_to_map(&labels)?},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "bpfman image build"}],
    })
    .to_string()
    .into_bytes();
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_string()),
        config: Descriptor::of(OCI_CONFIG, &config),
        layers: vec![Descriptor::of(OCI_LAYER_GZIP, &layer)],
        annotations: BTreeMap::new(),
    };
    let raw = serde_json::to_vec(&manifest).map_err(|e| Error::internal(format!("{e}")))?;
    layout.put_blob(&layer, None)?;
    layout.put_blob(&config, None)?;
    layout.put_blob(&raw, None)?;
    let mut d = Descriptor::of(OCI_MANIFEST, &raw);
    d.platform = Some(Platform {
        architecture: arch,
        os: "linux".into(),
        variant: None,
    });
    Ok((d, labels))
}

/// Builds the image and names it `tag` in `layout`.
pub fn build(
    layout: &Layout,
    tag: &str,
    inputs: &[BuildInput],
    labels: Option<&Labels>,
) -> Result<Built> {
    crate::image::registry::parse_reference(tag)?;
    if inputs.is_empty() {
        return Err(Error::invalid(
            "image build needs --bytecode FILE or --bytecode-for ARCH=FILE",
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut descs = Vec::new();
    let mut first_labels = None;
    for i in inputs {
        let arch = i
            .arch
            .clone()
            .unwrap_or_else(|| format::host_arch().to_string());
        if !seen.insert(arch.clone()) {
            return Err(Error::invalid(format!(
                "architecture {arch} is given twice"
            )));
        }
        let (d, l) = build_one(layout, i, labels)?;
        first_labels.get_or_insert(l);
        descs.push(d);
    }
    let multi = inputs.len() > 1 || inputs.iter().any(|i| i.arch.is_some());
    let top = if multi {
        let index = Index {
            schema_version: 2,
            media_type: Some(OCI_INDEX.to_string()),
            manifests: descs.clone(),
            annotations: BTreeMap::new(),
        };
        let raw = serde_json::to_vec(&index).map_err(|e| Error::internal(format!("{e}")))?;
        layout.put_blob(&raw, None)?;
        Descriptor::of(OCI_INDEX, &raw)
    } else {
        let mut d = descs[0].clone();
        d.platform = None;
        d
    };
    let lock = layout.lock()?;
    layout.set(&lock, tag, top.clone())?;
    Ok(Built {
        digest: top.digest,
        media_type: top.media_type,
        labels: first_labels.unwrap_or_default(),
        platforms: descs
            .iter()
            .filter_map(|d| {
                d.platform
                    .as_ref()
                    .map(|p| format!("{}/{}", p.os, p.architecture))
            })
            .collect(),
    })
}
