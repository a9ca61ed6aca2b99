//! Bytecode images: pull from registries into a verified cache, check cosign signatures
//! against the configured policy, and (client side) build, push, sign and verify.
//!
//! `registry` is the only code that talks to registries, `layout` the only code that
//! touches the cache directory, `format` and `sign` are pure.

pub mod builder;
pub mod format;
pub mod layout;
pub mod registry;
pub mod sign;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use p256::ecdsa::VerifyingKey;
use tracing::info;

use crate::config::ImagesConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::image::format::{
    Descriptor, Labels, ManifestKind, check_labels_against_elf, choose_platform, host_arch,
    inspect_elf, parse_config, parse_labels, parse_manifest,
};
use crate::image::layout::{Layout, REF_NAME};
use crate::image::registry::{Credentials, RegistryOptions};

pub const ANN_IMAGE_DIGEST: &str = "io.bpfman.image.digest";
pub const ANN_BYTECODE_DIGEST: &str = "io.bpfman.bytecode.digest";
pub const ANN_SIGNATURE: &str = "io.bpfman.signature";
pub const ANN_SIGNER: &str = "io.bpfman.signer";
pub const ANN_PULLED: &str = "io.bpfman.pulled";
pub const ANN_SIZE: &str = "io.bpfman.size";

pub use bpfman_types::PullPolicy;

/// A cached image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// Normalised reference (registry/repository:tag or @digest).
    pub reference: String,
    /// The digest the reference resolved to at the registry (index or manifest): the
    /// digest signatures are over.
    pub digest: String,
    /// The manifest used (this host's, when the image is multi-arch).
    pub manifest_digest: String,
    /// sha256 of the bytecode (ELF) itself.
    pub bytecode_digest: String,
    pub labels: Labels,
    pub size: u64,
    /// In words: "verified by key ...", "unsigned", "not checked".
    pub signature: String,
    /// Fingerprint of the key that verified it, if one did.
    pub signer: Option<String>,
    pub pulled_at: String,
}

impl ImageRecord {
    fn from_descriptor(d: &Descriptor) -> Option<Self> {
        let a = &d.annotations;
        Some(Self {
            reference: a.get(REF_NAME)?.clone(),
            digest: a.get(ANN_IMAGE_DIGEST)?.clone(),
            manifest_digest: d.digest.clone(),
            bytecode_digest: a.get(ANN_BYTECODE_DIGEST)?.clone(),
            labels: Labels {
                programs: a
                    .get(format::LABEL_PROGRAMS)
                    .and_then(|s| serde_json::from_str(s).ok())
                    .unwrap_or_default(),
                maps: a
                    .get(format::LABEL_MAPS)
                    .and_then(|s| serde_json::from_str(s).ok())
                    .unwrap_or_default(),
            },
            size: a
                .get(ANN_SIZE)
                .and_then(|s| s.parse().ok())
                .unwrap_or(d.size),
            signature: a.get(ANN_SIGNATURE).cloned().unwrap_or_default(),
            signer: a.get(ANN_SIGNER).cloned(),
            pulled_at: a.get(ANN_PULLED).cloned().unwrap_or_default(),
        })
    }
}

/// A pull's progress, for a progress bar.
#[derive(Debug, Clone)]
pub struct Progress {
    /// manifest, config, bytecode, signature, cached
    pub phase: &'static str,
    pub done: u64,
    pub total: u64,
}

/// A trusted key, loaded.
#[derive(Debug, Clone)]
pub struct LoadedKey {
    pub prefix: String,
    pub key: VerifyingKey,
    pub fingerprint: String,
    pub origin: String,
}

/// The signature rules in force.
#[derive(Debug, Clone, Default)]
pub struct SignaturePolicy {
    pub verify: bool,
    pub allow_unsigned: bool,
    pub keys: Vec<LoadedKey>,
}

impl SignaturePolicy {
    /// Reads the keys the config names; a key that cannot be read rejects the config.
    pub fn from_config(c: &crate::config::SignatureConfig) -> Result<Self> {
        let mut keys = Vec::new();
        for k in &c.trusted_keys {
            let origin = k.key.display().to_string();
            let pem = std::fs::read_to_string(&k.key).map_err(|e| {
                Error::invalid(format!(
                    "images.signatures: reading trusted key {origin}: {e}"
                ))
            })?;
            let key = sign::parse_public_key(&pem, &origin)?;
            keys.push(LoadedKey {
                prefix: k.prefix.clone(),
                fingerprint: sign::fingerprint(&key),
                key,
                origin,
            });
        }
        Ok(Self {
            verify: c.verify,
            allow_unsigned: c.allow_unsigned,
            keys,
        })
    }

    fn keys_for(&self, reference: &str) -> Vec<&LoadedKey> {
        self.keys
            .iter()
            .filter(|k| reference.starts_with(&k.prefix))
            .collect()
    }

    /// Whether a cached image's recorded signer satisfies the policy now.
    fn admits_cached(&self, reference: &str, signer: Option<&str>) -> Result<()> {
        if !self.verify {
            return Ok(());
        }
        let keys = self.keys_for(reference);
        if keys.is_empty() {
            if self.allow_unsigned {
                return Ok(());
            }
            return Err(Error::denied(format!(
                "image {reference}: allow_unsigned is false and no trusted key covers it; \
                 add a [[images.signatures.trusted_keys]] whose prefix matches"
            )));
        }
        match signer {
            Some(s) if keys.iter().any(|k| k.fingerprint == s) => Ok(()),
            _ => Err(Error::denied(format!(
                "cached image {reference} was not verified with a key trusted for it now; pull \
                 it again with --pull-policy Always so its signature is checked"
            ))),
        }
    }
}

/// What the signature tag of an image holds, judged against some keys.
#[derive(Debug, Clone)]
pub enum SigCheck {
    Verified { fingerprint: String, origin: String },
    Unsigned,
    Untrusted { signatures: usize, reason: String },
}

/// Looks for cosign signatures of `digest` in `reference`'s repository, by `keys`.
pub async fn check_signatures(
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
    digest: &str,
    keys: &[&LoadedKey],
) -> Result<SigCheck> {
    let tag = sign::signature_tag(digest)?;
    let sig_ref = Reference::with_tag(
        reference.registry().to_string(),
        reference.repository().to_string(),
        tag,
    );
    let raw = match registry::fetch_manifest(client, &sig_ref, auth).await {
        Ok((raw, _)) => raw,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(SigCheck::Unsigned),
        Err(e) => return Err(e.context("fetching the image's signatures")),
    };
    let ManifestKind::Image(m) = parse_manifest(&raw, "signature manifest")? else {
        return Err(Error::invalid(
            "the signature tag holds an index, not a manifest",
        ));
    };
    let repository = format!("{}/{}", reference.registry(), reference.repository());
    let mut count = 0;
    let mut reason = String::from("no simple-signing layers");
    for layer in m
        .layers
        .iter()
        .filter(|l| l.media_type == sign::SIMPLE_SIGNING)
    {
        let Some(sig) = layer.annotations.get(sign::SIGNATURE_ANNOTATION) else {
            continue;
        };
        count += 1;
        let payload = registry::fetch_blob(
            client,
            &sig_ref,
            layer,
            1 << 20,
            "signature payload",
            &mut |_, _| {},
        )
        .await?;
        for k in keys {
            match sign::verify_one(&k.key, &payload, sig, &repository, digest) {
                Ok(()) => {
                    return Ok(SigCheck::Verified {
                        fingerprint: k.fingerprint.clone(),
                        origin: k.origin.clone(),
                    });
                }
                Err(e) => reason = e.to_string(),
            }
        }
    }
    if count == 0 {
        return Ok(SigCheck::Unsigned);
    }
    Ok(SigCheck::Untrusted {
        signatures: count,
        reason,
    })
}

/// The daemon's image service: one cache, one signature policy, pulls de-duplicated.
pub struct ImageService {
    layout: Layout,
    opts: RegistryOptions,
    max_size: u64,
    signatures: RwLock<Arc<SignaturePolicy>>,
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Instant>>>>>,
}

fn now() -> String {
    crate::model::now_rfc3339()
}

impl ImageService {
    pub fn open(c: &ImagesConfig) -> Result<Self> {
        let layout =
            Layout::open(&c.cache_dir).map_err(|e| e.context("opening the image cache"))?;
        Ok(Self {
            layout,
            opts: RegistryOptions {
                insecure: c.insecure_registries.clone(),
                auth_file: c.auth_file.clone(),
            },
            max_size: c.max_image_size,
            signatures: RwLock::new(Arc::new(SignaturePolicy::from_config(&c.signatures)?)),
            inflight: Mutex::new(HashMap::new()),
        })
    }

    pub fn cache_dir(&self) -> &Path {
        self.layout.root()
    }

    /// Applies a new signature policy (config reload).
    pub fn set_signature_policy(&self, p: SignaturePolicy) {
        if let Ok(mut g) = self.signatures.write() {
            *g = Arc::new(p);
        }
    }

    fn policy(&self) -> Arc<SignaturePolicy> {
        self.signatures
            .read()
            .map(|g| g.clone())
            .unwrap_or_default()
    }

    /// Normalises a reference string the way the cache names it.
    pub fn normalise(url: &str) -> Result<(Reference, String)> {
        let r = registry::parse_reference(url)?;
        let whole = r.whole();
        Ok((r, whole))
    }

    /// The cached image named `reference`, if any (not checked against the policy).
    pub fn cached(&self, reference: &str) -> Result<Option<ImageRecord>> {
        let (_, name) = Self::normalise(reference)?;
        Ok(self
            .layout
            .find(&name)?
            .and_then(|d| ImageRecord::from_descriptor(&d)))
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        let mut v: Vec<ImageRecord> = self
            .layout
            .index()?
            .manifests
            .iter()
            .filter_map(ImageRecord::from_descriptor)
            .collect();
        v.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(v)
    }

    /// Removes images by reference or by digest (image or manifest digest, or a
    /// unique prefix of one). Returns what was removed.
    pub fn remove(&self, what: &str) -> Result<Vec<ImageRecord>> {
        let by_ref = Self::normalise(what).ok().map(|(_, n)| n);
        let lock = self.layout.lock()?;
        let all = self.list()?;
        let hits: Vec<&ImageRecord> = all
            .iter()
            .filter(|r| {
                Some(&r.reference) == by_ref.as_ref()
                    || r.reference == what
                    || (what.len() >= 7
                        && (r
                            .digest
                            .trim_start_matches("sha256:")
                            .starts_with(what.trim_start_matches("sha256:"))
                            || r.manifest_digest
                                .trim_start_matches("sha256:")
                                .starts_with(what.trim_start_matches("sha256:"))))
            })
            .collect();
        if hits.is_empty() {
            return Err(Error::not_found(format!(
                "no cached image matches '{what}' (see `bpfman image list`)"
            )));
        }
        let names: Vec<String> = hits.iter().map(|r| r.reference.clone()).collect();
        let gone = self.layout.remove(&lock, |d| {
            d.annotations
                .get(REF_NAME)
                .map(|n| names.contains(n))
                .unwrap_or(false)
        })?;
        self.layout.gc(&lock)?;
        Ok(gone
            .iter()
            .filter_map(ImageRecord::from_descriptor)
            .collect())
    }

    /// The verified bytecode of a cached image.
    pub fn bytecode(&self, rec: &ImageRecord) -> Result<Vec<u8>> {
        self.layout.get_blob(&rec.bytecode_digest)
    }

    /// Pulls in progress (entries of the in-flight table).
    pub fn pulls_in_flight(&self) -> usize {
        self.inflight.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Makes `url` available in the cache according to `policy`, pulling when needed,
    /// checking digests, labels, architecture and signatures. Concurrent pulls of one
    /// reference are done once.
    pub async fn pull(
        &self,
        url: &str,
        policy: PullPolicy,
        creds: &Credentials,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<ImageRecord> {
        let (reference, name) = Self::normalise(url)?;
        let started = Instant::now();
        let slot = {
            let mut m = self
                .inflight
                .lock()
                .map_err(|_| Error::internal("image pull table poisoned"))?;
            m.entry(name.clone()).or_default().clone()
        };
        let r = self
            .pull_in_slot(&slot, reference, &name, started, policy, creds, progress)
            .await;
        // The slot goes once nobody else is pulling the same name (the table stays the
        // size of what is in progress).
        if let Ok(mut m) = self.inflight.lock()
            && Arc::strong_count(&slot) == 2
        {
            m.remove(&name);
        }
        r
    }

    /// The pull of one name, with its slot held: concurrent pulls of it wait here and
    /// find the image fresh in the cache.
    #[allow(clippy::too_many_arguments)]
    async fn pull_in_slot(
        &self,
        slot: &tokio::sync::Mutex<Option<Instant>>,
        reference: Reference,
        name: &str,
        started: Instant,
        policy: PullPolicy,
        creds: &Credentials,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<ImageRecord> {
        let name = name.to_string();
        let mut last_pull = slot.lock().await;
        let sig_policy = self.policy();
        if let Some(rec) = self.cached(&name)? {
            let fresh = last_pull.map(|t| t >= started).unwrap_or(false);
            if policy != PullPolicy::Always || fresh {
                sig_policy.admits_cached(&name, rec.signer.as_deref())?;
                // Checked against its digest on every use.
                self.bytecode(&rec)
                    .map_err(|e| e.context(format!("cached image {name}")))?;
                progress(Progress {
                    phase: "cached",
                    done: rec.size,
                    total: rec.size,
                });
                return Ok(rec);
            }
        } else if policy == PullPolicy::Never {
            return Err(Error::not_found(format!(
                "image {name} is not in the cache and the pull policy is Never; pull it first \
                 (bpfman image pull {name}) or use IfNotPresent"
            )));
        }
        let rec = self
            .fetch(&reference, &name, creds, &sig_policy, progress)
            .await?;
        *last_pull = Some(Instant::now());
        Ok(rec)
    }

    // Long on purpose: the pull in the order the registry protocol and the trust
    // argument need (resolve, manifest or index, this host's manifest, signature, config,
    // bytecode layer, verify, store), each step's checks beside it.
    async fn fetch(
        &self,
        reference: &Reference,
        name: &str,
        creds: &Credentials,
        sig_policy: &SignaturePolicy,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<ImageRecord> {
        let what = format!("pulling {name}");
        // Test hook: widen the window in which concurrent pulls must share one fetch.
        if let Some(ms) = std::env::var("BPFMAN_TEST_PULL_DELAY_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        let client = registry::client_for(reference, &self.opts)?;
        let auth = registry::resolve_auth(reference, creds, &self.opts)?;
        progress(Progress {
            phase: "manifest",
            done: 0,
            total: 0,
        });
        let (top_raw, top_digest) = registry::fetch_manifest(&client, reference, &auth).await?;
        let mut blobs: Vec<(Vec<u8>, String)> = vec![(top_raw.clone(), top_digest.clone())];
        let (manifest, manifest_digest) = match parse_manifest(&top_raw, &what)? {
            ManifestKind::Image(m) => (m, top_digest.clone()),
            ManifestKind::Index(idx) => {
                let d = choose_platform(&idx, name)?;
                let child = reference.clone_with_digest(d.digest.clone());
                let (raw, digest) = registry::fetch_manifest(&client, &child, &auth).await?;
                let ManifestKind::Image(m) = parse_manifest(&raw, &what)? else {
                    return Err(Error::invalid(format!(
                        "{what}: the index entry for {} is itself an index",
                        host_arch()
                    )));
                };
                blobs.push((raw, digest.clone()));
                (m, digest)
            }
        };
        let Some(layer) = manifest.layers.first() else {
            return Err(Error::invalid(format!(
                "{what}: the image has no layers; the first layer must hold the bytecode"
            )));
        };
        let total = manifest.config.size.saturating_add(layer.size);
        if total > self.max_size {
            return Err(Error::invalid(format!(
                "{what}: the image is {total} bytes, over the limit of {} bytes \
                 ([images] max_image_size)",
                self.max_size
            )));
        }
        // Signatures before any blob is fetched or stored.
        let keys = sig_policy.keys_for(name);
        let (signature, signer) = if !sig_policy.verify {
            ("not checked (verification is off)".to_string(), None)
        } else if keys.is_empty() {
            if !sig_policy.allow_unsigned {
                return Err(Error::denied(format!(
                    "{what}: allow_unsigned is false and no trusted key covers this image; add \
                     a [[images.signatures.trusted_keys]] whose prefix matches it"
                )));
            }
            (
                "not checked (no trusted key covers this image)".to_string(),
                None,
            )
        } else {
            progress(Progress {
                phase: "signature",
                done: 0,
                total: 0,
            });
            match check_signatures(&client, reference, &auth, &top_digest, &keys).await? {
                SigCheck::Verified {
                    fingerprint,
                    origin,
                } => (
                    format!("verified: signed by key {fingerprint} ({origin})"),
                    Some(fingerprint),
                ),
                SigCheck::Unsigned => {
                    return Err(Error::denied(format!(
                        "{what}: the image is unsigned, but a trusted key covers it (prefix \
                         '{}'); sign it with `bpfman image sign --key KEY {name}` or cosign",
                        keys[0].prefix
                    )));
                }
                SigCheck::Untrusted { signatures, reason } => {
                    return Err(Error::denied(format!(
                        "{what}: the image has {signatures} signature(s) but none by a key \
                         trusted for it ({reason})"
                    )));
                }
            }
        };
        let config_raw = registry::fetch_blob(
            &client,
            reference,
            &manifest.config,
            registry::MAX_DOCUMENT.min(self.max_size),
            &format!("{what}: config"),
            &mut |d, t| {
                progress(Progress {
                    phase: "config",
                    done: d,
                    total: t,
                })
            },
        )
        .await?;
        let config = parse_config(&config_raw, &what)?;
        if let Some(arch) = &config.architecture
            && !arch.is_empty()
            && arch != host_arch()
        {
            return Err(Error::invalid(format!(
                "{what}: the image is built for {}/{arch}; this host is linux/{}. Push a \
                 multi-arch image (bpfman image build --bytecode-for {}=FILE.o)",
                config.os.as_deref().unwrap_or("linux"),
                host_arch(),
                host_arch()
            )));
        }
        let labels = parse_labels(
            &config
                .config
                .as_ref()
                .and_then(|c| c.labels.clone())
                .unwrap_or_default(),
        )
        .map_err(|e| e.context(&what))?;
        let layer_raw = registry::fetch_blob(
            &client,
            reference,
            layer,
            self.max_size,
            &format!("{what}: bytecode layer"),
            &mut |d, t| {
                progress(Progress {
                    phase: "bytecode",
                    done: d,
                    total: t,
                })
            },
        )
        .await?;
        // Decompressed, the bytecode may be 8x the image limit (a gzip-bomb guard).
        let elf = format::extract_bytecode(
            &layer_raw,
            &layer.media_type,
            self.max_size.saturating_mul(8),
            &what,
        )?;
        let info = inspect_elf(&elf, &format!("{what}: the first file of the first layer"))?;
        check_labels_against_elf(&labels, &info, &what)?;
        // The labels as bpfman reports them: the image's, else what the ELF holds.
        let labels = if labels.programs.is_empty() {
            Labels {
                programs: info.labels.programs.clone(),
                maps: if labels.maps.is_empty() {
                    info.labels.maps.clone()
                } else {
                    labels.maps
                },
            }
        } else {
            labels
        };

        // Everything checked: store it.
        let lock = self.layout.lock()?;
        for (raw, digest) in &blobs {
            self.layout.put_blob(raw, Some(digest))?;
        }
        self.layout
            .put_blob(&config_raw, Some(&manifest.config.digest))?;
        self.layout.put_blob(&layer_raw, Some(&layer.digest))?;
        let elf_digest = self.layout.put_blob(&elf, None)?;
        let mut desc = Descriptor {
            media_type: manifest
                .media_type
                .clone()
                .unwrap_or_else(|| format::OCI_MANIFEST.to_string()),
            digest: manifest_digest.clone(),
            size: blobs.last().map(|(r, _)| r.len() as u64).unwrap_or(0),
            annotations: BTreeMap::new(),
            platform: None,
        };
        let a = &mut desc.annotations;
        a.insert(ANN_IMAGE_DIGEST.into(), top_digest.clone());
        a.insert(ANN_BYTECODE_DIGEST.into(), elf_digest.clone());
        a.insert(ANN_SIGNATURE.into(), signature.clone());
        if let Some(s) = &signer {
            a.insert(ANN_SIGNER.into(), s.clone());
        }
        a.insert(ANN_PULLED.into(), now());
        a.insert(ANN_SIZE.into(), total.to_string());
        a.extend(format::labels_to_map(&labels)?);
        self.layout.set(&lock, name, desc.clone())?;
        self.layout.gc(&lock)?;
        drop(lock);
        desc.annotations.insert(REF_NAME.into(), name.to_string());
        info!(image = name, digest = %top_digest, "pulled");
        ImageRecord::from_descriptor(&desc)
            .ok_or_else(|| Error::internal("a just-stored image record is incomplete"))
    }
}

/// Client side: pushes `local` from a layout to `target` (a registry reference).
pub async fn push(
    layout: &Layout,
    local: &str,
    target: &str,
    creds: &Credentials,
    opts: &RegistryOptions,
) -> Result<String> {
    let target_ref = registry::parse_reference(target)?;
    let (_, local_name) = ImageService::normalise(local)?;
    let top = layout.find(&local_name)?.ok_or_else(|| {
        Error::not_found(format!(
            "{local_name} is not in {} (build it with `bpfman image build --tag {local_name}`)",
            layout.root().display()
        ))
    })?;
    let client = registry::client_for(&target_ref, opts)?;
    let auth = registry::resolve_auth(&target_ref, creds, opts)?;
    async fn push_manifest_tree(
        layout: &Layout,
        client: &Client,
        target: &Reference,
        auth: &RegistryAuth,
        desc: &Descriptor,
    ) -> Result<()> {
        let raw = layout.get_blob(&desc.digest)?;
        match parse_manifest(&raw, &desc.digest)? {
            ManifestKind::Image(m) => {
                for d in std::iter::once(&m.config).chain(m.layers.iter()) {
                    let blob = layout.get_blob(&d.digest)?;
                    registry::push_blob(client, target, auth, blob, &d.digest).await?;
                }
            }
            ManifestKind::Index(i) => {
                for child in &i.manifests {
                    Box::pin(push_manifest_tree(layout, client, target, auth, child)).await?;
                    let raw = layout.get_blob(&child.digest)?;
                    let by_digest = target.clone_with_digest(child.digest.clone());
                    registry::push_manifest(client, &by_digest, auth, raw, &child.media_type)
                        .await?;
                }
            }
        }
        Ok(())
    }
    push_manifest_tree(layout, &client, &target_ref, &auth, &top).await?;
    let raw = layout.get_blob(&top.digest)?;
    registry::push_manifest(&client, &target_ref, &auth, raw, &top.media_type).await?;
    Ok(top.digest)
}

/// Client side: signs what `reference` points at now and uploads the signature.
/// Returns the signed digest.
pub async fn sign_remote(
    reference: &str,
    key: &p256::ecdsa::SigningKey,
    creds: &Credentials,
    opts: &RegistryOptions,
) -> Result<String> {
    let r = registry::parse_reference(reference)?;
    let client = registry::client_for(&r, opts)?;
    let auth = registry::resolve_auth(&r, creds, opts)?;
    let (_, digest) = registry::fetch_manifest(&client, &r, &auth).await?;
    let repository = format!("{}/{}", r.registry(), r.repository());
    let payload = sign::payload(&repository, &digest);
    let signature = sign::sign(key, &payload);
    let sig_ref = Reference::with_tag(
        r.registry().to_string(),
        r.repository().to_string(),
        sign::signature_tag(&digest)?,
    );
    // Keep signatures already there (cosign appends too).
    let mut layers = match registry::fetch_manifest(&client, &sig_ref, &auth).await {
        Ok((raw, _)) => match parse_manifest(&raw, "existing signatures")? {
            ManifestKind::Image(m) => m.layers,
            ManifestKind::Index(_) => Vec::new(),
        },
        Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let layer = sign::signature_layer(&payload, &signature);
    layers.retain(|l| l.digest != layer.digest || l.annotations != layer.annotations);
    layers.push(layer.clone());
    let (manifest, config) = sign::signature_manifest(layers)?;
    registry::push_blob(&client, &sig_ref, &auth, payload, &layer.digest).await?;
    let config_digest = format::sha256_digest(&config);
    registry::push_blob(&client, &sig_ref, &auth, config, &config_digest).await?;
    registry::push_manifest(&client, &sig_ref, &auth, manifest, format::OCI_MANIFEST).await?;
    Ok(digest)
}

/// Client side: checks `reference`'s signatures against `keys`.
pub async fn verify_remote(
    reference: &str,
    keys: &[LoadedKey],
    creds: &Credentials,
    opts: &RegistryOptions,
) -> Result<(String, SigCheck)> {
    let r = registry::parse_reference(reference)?;
    let client = registry::client_for(&r, opts)?;
    let auth = registry::resolve_auth(&r, creds, opts)?;
    let (_, digest) = registry::fetch_manifest(&client, &r, &auth).await?;
    let refs: Vec<&LoadedKey> = keys.iter().collect();
    let c = check_signatures(&client, &r, &auth, &digest, &refs).await?;
    Ok((digest, c))
}
