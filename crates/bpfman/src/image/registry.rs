//! The one module that talks to registries (through oci-client): which protocol, which
//! credentials, fetching manifests and blobs with their digests checked, pushing.
//! Credentials live only in memory for the length of one operation.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};
use crate::image::format::{Descriptor, MANIFEST_TYPES, digest_hex};

/// The largest manifest or config document accepted.
pub const MAX_DOCUMENT: u64 = 4 << 20;

/// Parses a user's image reference, naming what is wrong.
pub fn parse_reference(s: &str) -> Result<Reference> {
    if s.trim().is_empty() {
        return Err(Error::invalid("the image reference is empty"));
    }
    Reference::try_from(s).map_err(|e| {
        Error::invalid(format!(
            "'{s}' is not a valid image reference ({e}); use REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]"
        ))
    })
}

/// Whether `registry` (host[:port]) is on the loopback network.
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(registry)
    };
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .map(|a| a.is_loopback())
            .unwrap_or(false)
}

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Registries (host[:port]) reached over plain HTTP besides loopback ones.
    pub insecure: Vec<String>,
    /// A docker-style config.json with `auths`.
    pub auth_file: Option<std::path::PathBuf>,
}

/// Credentials a caller passed.
#[derive(Clone, Default)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, <redacted>)", self.username)
    }
}

impl Credentials {
    /// From `--registry-auth`, base64 of `user:password`.
    pub fn from_base64(b64: &str) -> Result<Self> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| {
                Error::invalid("--registry-auth is not base64; give base64 of USER:PASSWORD")
            })?;
        let s = String::from_utf8(raw)
            .map_err(|_| Error::invalid("--registry-auth does not decode to text USER:PASSWORD"))?;
        let (u, p) = s.split_once(':').ok_or_else(|| {
            Error::invalid("--registry-auth must be base64 of USER:PASSWORD (no ':' found)")
        })?;
        Ok(Self {
            username: Some(u.to_string()),
            password: Some(p.to_string()),
        })
    }
}

/// A client for one registry, with the protocol it needs.
pub fn client_for(reference: &Reference, opts: &RegistryOptions) -> Result<Client> {
    let registry = reference.resolve_registry().to_string();
    let plain = is_loopback(&registry) || opts.insecure.iter().any(|r| r == &registry);
    let config = ClientConfig {
        protocol: if plain {
            ClientProtocol::HttpsExcept(vec![registry])
        } else {
            ClientProtocol::Https
        },
        connect_timeout: Some(Duration::from_secs(10)),
        read_timeout: Some(Duration::from_secs(60)),
        platform_resolver: None,
        ..Default::default()
    };
    Client::try_from(config)
        .map_err(|e| Error::internal(format!("creating a registry client: {e}")))
}

/// Reads credentials for `registry` from a docker config.json.
fn auth_from_file(path: &Path, registry: &str) -> Result<Option<RegistryAuth>> {
    let raw = match std::fs::read(path) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::invalid(format!(
                "reading registry credentials {}: {e}",
                path.display()
            )));
        }
    };
    let v: serde_json::Value = serde_json::from_slice(&raw).map_err(|e| {
        Error::invalid(format!(
            "registry credentials {} are not JSON: {e}",
            path.display()
        ))
    })?;
    let Some(entry) = v.get("auths").and_then(|a| {
        a.get(registry)
            .or_else(|| a.get(format!("https://{registry}").as_str()))
            .or_else(|| a.get(format!("http://{registry}").as_str()))
    }) else {
        return Ok(None);
    };
    if let Some(b64) = entry.get("auth").and_then(|a| a.as_str()) {
        let c = Credentials::from_base64(b64)
            .map_err(|e| e.context(format!("the auth of {registry} in {}", path.display())))?;
        return Ok(Some(RegistryAuth::Basic(
            c.username.unwrap_or_default(),
            c.password.unwrap_or_default(),
        )));
    }
    if let Some(t) = entry.get("registrytoken").and_then(|a| a.as_str()) {
        return Ok(Some(RegistryAuth::Bearer(t.to_string())));
    }
    match (
        entry.get("username").and_then(|u| u.as_str()),
        entry.get("password").and_then(|u| u.as_str()),
    ) {
        (Some(u), Some(p)) => Ok(Some(RegistryAuth::Basic(u.into(), p.into()))),
        _ => Ok(None),
    }
}

/// The caller's credentials, else the configured file's, else anonymous.
pub fn resolve_auth(
    reference: &Reference,
    creds: &Credentials,
    opts: &RegistryOptions,
) -> Result<RegistryAuth> {
    if let Some(u) = &creds.username {
        return Ok(RegistryAuth::Basic(
            u.clone(),
            creds.password.clone().unwrap_or_default(),
        ));
    }
    if let Some(p) = &opts.auth_file
        && let Some(a) = auth_from_file(p, reference.resolve_registry())?
    {
        return Ok(a);
    }
    Ok(RegistryAuth::Anonymous)
}

/// Turns a registry error into one that says what to do.
pub fn map_err(e: OciDistributionError, what: &str, reference: &Reference) -> Error {
    let registry = reference.resolve_registry();
    match e {
        OciDistributionError::RequestError(re) => {
            let mut msg = re.to_string();
            let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&re);
            while let Some(s) = src {
                msg = format!("{msg}: {s}");
                src = s.source();
            }
            if re.is_timeout() {
                Error::new(
                    ErrorKind::FailedPrecondition,
                    format!("{what}: registry {registry} did not answer in time ({msg})"),
                )
            } else if re.is_connect() || msg.contains("dns") {
                Error::new(
                    ErrorKind::FailedPrecondition,
                    format!(
                        "{what}: cannot reach registry {registry} ({msg}); check the address \
                         and that the registry is running"
                    ),
                )
            } else {
                Error::new(
                    ErrorKind::FailedPrecondition,
                    format!("{what}: talking to registry {registry}: {msg}"),
                )
            }
        }
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => Error::denied(format!(
            "{what}: registry {registry} refused access (401 Unauthorized); give credentials \
             with --registry-auth BASE64(USER:PASSWORD) or configure [images] auth_file"
        )),
        OciDistributionError::ServerError { code: 403, .. } => Error::denied(format!(
            "{what}: registry {registry} forbids this (403 Forbidden) for these credentials"
        )),
        OciDistributionError::ServerError { code: 404, .. }
        | OciDistributionError::ImageManifestNotFoundError(_) => Error::not_found(format!(
            "{what}: {} is not in registry {registry} (404); check the repository and tag",
            reference.whole()
        )),
        OciDistributionError::RegistryError { envelope, .. } => {
            use oci_client::errors::OciErrorCode as C;
            let text: Vec<String> = envelope.errors.iter().map(|e| e.message.clone()).collect();
            let any = |f: fn(&C) -> bool| envelope.errors.iter().any(|e| f(&e.code));
            if any(|c| {
                matches!(
                    c,
                    C::BlobUnknown
                        | C::BlobUploadUnknown
                        | C::ManifestBlobUnknown
                        | C::ManifestUnknown
                        | C::NameUnknown
                        | C::NotFound
                )
            }) {
                Error::not_found(format!(
                    "{what}: {} is not in registry {registry} ({}); check the repository and tag",
                    reference.whole(),
                    text.join("; ")
                ))
            } else if any(|c| matches!(c, C::Unauthorized | C::Denied)) {
                Error::denied(format!(
                    "{what}: registry {registry} refused access ({}); give credentials with \
                     --registry-auth BASE64(USER:PASSWORD)",
                    text.join("; ")
                ))
            } else {
                Error::new(
                    ErrorKind::FailedPrecondition,
                    format!("{what}: registry {registry} answered: {}", text.join("; ")),
                )
            }
        }
        OciDistributionError::DigestError(d) => Error::invalid(format!(
            "{what}: content from {registry} does not match its digest ({d}); nothing was stored"
        )),
        other => Error::new(
            ErrorKind::FailedPrecondition,
            format!("{what}: registry {registry}: {other}"),
        ),
    }
}

/// Fetches a manifest (or index) and checks its digest. Returns the bytes and digest.
pub async fn fetch_manifest(
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
) -> Result<(Vec<u8>, String)> {
    let what = format!("fetching the manifest of {}", reference.whole());
    let (raw, digest) = client
        .pull_manifest_raw(reference, auth, MANIFEST_TYPES)
        .await
        .map_err(|e| map_err(e, &what, reference))?;
    if raw.len() as u64 > MAX_DOCUMENT {
        return Err(Error::invalid(format!(
            "{what}: the manifest is {} bytes, larger than any image manifest should be",
            raw.len()
        )));
    }
    let actual = crate::image::format::sha256_digest(&raw);
    if let Some(want) = reference.digest()
        && want != actual
    {
        return Err(Error::invalid(format!(
            "{what}: the registry sent a manifest whose digest is {actual}, not {want}; nothing was stored"
        )));
    }
    if digest.starts_with("sha256:") && digest != actual {
        return Err(Error::invalid(format!(
            "{what}: the manifest's digest is {actual} but the registry says {digest}; nothing was stored"
        )));
    }
    Ok((raw.to_vec(), actual))
}

/// Fetches a blob, checking size and digest as it streams. `progress(done, total)`.
pub async fn fetch_blob(
    client: &Client,
    reference: &Reference,
    desc: &Descriptor,
    limit: u64,
    what: &str,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<Vec<u8>> {
    digest_hex(&desc.digest)?;
    if desc.size > limit {
        return Err(Error::invalid(format!(
            "{what}: {} is {} bytes, over the limit of {limit} bytes ([images] max_image_size)",
            desc.digest, desc.size
        )));
    }
    let oci_desc = oci_client::manifest::OciDescriptor {
        media_type: desc.media_type.clone(),
        digest: desc.digest.clone(),
        size: desc.size as i64,
        ..Default::default()
    };
    let mut stream = client
        .pull_blob_stream(reference, &oci_desc)
        .await
        .map_err(|e| map_err(e, what, reference))?;
    let mut out = Vec::with_capacity(desc.size as usize);
    let mut hasher = Sha256::new();
    progress(0, desc.size);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            let mismatch = e
                .get_ref()
                .and_then(|i| i.downcast_ref::<oci_client::errors::DigestError>())
                .is_some_and(|d| {
                    matches!(d, oci_client::errors::DigestError::VerificationError { .. })
                });
            if mismatch {
                return Error::invalid(format!(
                    "{what}: blob {} does not match its digest ({e}); nothing was stored",
                    desc.digest
                ));
            }
            Error::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "{what}: the download from {} broke off after {} bytes: {e}",
                    reference.resolve_registry(),
                    out.len()
                ),
            )
        })?;
        if (out.len() + chunk.len()) as u64 > desc.size.max(1).min(limit) {
            return Err(Error::invalid(format!(
                "{what}: the registry sent more than the {} bytes {} declares; nothing was stored",
                desc.size, desc.digest
            )));
        }
        hasher.update(&chunk);
        out.extend_from_slice(&chunk);
        progress(out.len() as u64, desc.size);
    }
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual != desc.digest {
        return Err(Error::invalid(format!(
            "{what}: blob {} arrived with digest {actual} ({} of {} bytes): it does not match; \
             nothing was stored",
            desc.digest,
            out.len(),
            desc.size
        )));
    }
    Ok(out)
}

/// Uploads a blob unless the registry has it.
pub async fn push_blob(
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
    data: Vec<u8>,
    digest: &str,
) -> Result<()> {
    let what = format!("pushing blob {digest} to {}", reference.whole());
    client
        .auth(reference, auth, RegistryOperation::Push)
        .await
        .map_err(|e| map_err(e, &what, reference))?;
    if client.blob_exists(reference, digest).await.unwrap_or(false) {
        return Ok(());
    }
    client
        .push_blob(reference, data, digest)
        .await
        .map_err(|e| map_err(e, &what, reference))?;
    Ok(())
}

/// Uploads a manifest under `reference` (its tag or digest).
pub async fn push_manifest(
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
    raw: Vec<u8>,
    media_type: &str,
) -> Result<()> {
    let what = format!("pushing the manifest of {}", reference.whole());
    client
        .auth(reference, auth, RegistryOperation::Push)
        .await
        .map_err(|e| map_err(e, &what, reference))?;
    let ct = media_type
        .parse()
        .map_err(|_| Error::invalid(format!("{what}: bad media type {media_type}")))?;
    client
        .push_manifest_raw(reference, raw, ct)
        .await
        .map_err(|e| map_err(e, &what, reference))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_credentials() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("127.1.2.3"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("quay.io"));
        assert!(!is_loopback("10.0.0.1:5000"));
        let c = Credentials::from_base64("dTpw").ok();
        assert_eq!(c.and_then(|c| c.password).as_deref(), Some("p"));
        assert!(Credentials::from_base64("!!!").is_err());
        assert!(Credentials::from_base64("dXNlcg==").is_err()); // "user", no ':'
        assert!(parse_reference("").is_err());
        assert!(parse_reference("UPPER/Case:tag").is_err());
    }
}
