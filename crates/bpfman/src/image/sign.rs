//! Image signatures in cosign's format, key-based and fully offline:
//! - the payload is "simple signing" JSON naming the repository and manifest digest;
//! - the signature is ECDSA P-256 over SHA-256 of the payload, ASN.1 DER, base64, in the
//!   layer annotation `dev.cosignproject.cosign/signature`;
//! - signatures live in the same repository under the tag `sha256-<hex>.sig`, one layer
//!   each (media type `application/vnd.dev.cosign.simplesigning.v1+json`);
//! - private keys are cosign's encrypted PEM (scrypt + NaCl secretbox), public keys PKIX PEM.
//!
//! So images signed by cosign (or skopeo's sigstore signing) verify here, and ours verify
//! with cosign.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use crypto_secretbox::XSalsa20Poly1305;
use crypto_secretbox::aead::{Aead, KeyInit};
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::image::format::{Descriptor, Manifest, OCI_CONFIG, OCI_MANIFEST, digest_hex};

pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const SIGNATURE_TYPE: &str = "cosign container image signature";
const PEM_SIGSTORE: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
const PEM_COSIGN: &str = "ENCRYPTED COSIGN PRIVATE KEY";

/// The tag holding the signatures of `digest`.
pub fn signature_tag(digest: &str) -> Result<String> {
    Ok(format!("sha256-{}.sig", digest_hex(digest)?))
}

/// A short fingerprint of a public key (sha256 of its DER, first 16 hex digits).
pub fn fingerprint(key: &VerifyingKey) -> String {
    let der = key
        .to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .unwrap_or_default();
    hex::encode(&Sha256::digest(&der)[..8])
}

pub fn parse_public_key(pem: &str, origin: &str) -> Result<VerifyingKey> {
    VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| {
        Error::invalid(format!(
            "{origin} is not an ECDSA P-256 public key in PEM (\"PUBLIC KEY\"), as cosign \
             writes: {e}"
        ))
    })
}

pub fn public_key_pem(key: &VerifyingKey) -> Result<String> {
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|e| Error::internal(format!("encoding the public key: {e}")))
}

#[derive(Serialize, Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}
#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}
#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}
#[derive(Serialize, Deserialize)]
struct Encrypted {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

fn secretbox_key(password: &[u8], salt: &[u8], n: u64, r: u32, p: u32) -> Result<[u8; 32]> {
    if !n.is_power_of_two() || !(2..=(1 << 22)).contains(&n) {
        return Err(Error::invalid(format!(
            "scrypt N={n} is not a supported power of two"
        )));
    }
    let params = scrypt::Params::new(n.trailing_zeros() as u8, r, p, 32)
        .map_err(|e| Error::invalid(format!("scrypt parameters: {e}")))?;
    let mut key = [0u8; 32];
    scrypt::scrypt(password, salt, &params, &mut key)
        .map_err(|e| Error::internal(format!("scrypt: {e}")))?;
    Ok(key)
}

/// Reads a private key: cosign's encrypted PEM (with `password`), or PKCS#8 / SEC1 PEM.
pub fn parse_private_key(pem: &str, password: &[u8], origin: &str) -> Result<SigningKey> {
    let (label, der) = pem_rfc7468::decode_vec(pem.trim().as_bytes())
        .map_err(|e| Error::invalid(format!("{origin} is not a PEM private key: {e}")))?;
    match label {
        PEM_SIGSTORE | PEM_COSIGN => {
            let enc: Encrypted = serde_json::from_slice(&der).map_err(|e| {
                Error::invalid(format!("{origin}: the encrypted key is malformed: {e}"))
            })?;
            if enc.kdf.name != "scrypt" || enc.cipher.name != "nacl/secretbox" {
                return Err(Error::invalid(format!(
                    "{origin}: key encrypted with {}/{}; only scrypt + nacl/secretbox (cosign) is supported",
                    enc.kdf.name, enc.cipher.name
                )));
            }
            let salt = B64
                .decode(&enc.kdf.salt)
                .map_err(|_| Error::invalid(format!("{origin}: bad salt")))?;
            let nonce = B64
                .decode(&enc.cipher.nonce)
                .map_err(|_| Error::invalid(format!("{origin}: bad nonce")))?;
            let ct = B64
                .decode(&enc.ciphertext)
                .map_err(|_| Error::invalid(format!("{origin}: bad ciphertext")))?;
            if nonce.len() != 24 {
                return Err(Error::invalid(format!(
                    "{origin}: the nonce is not 24 bytes"
                )));
            }
            let key = secretbox_key(
                password,
                &salt,
                enc.kdf.params.n,
                enc.kdf.params.r,
                enc.kdf.params.p,
            )?;
            let plain = XSalsa20Poly1305::new(&key.into())
                .decrypt(nonce.as_slice().into(), ct.as_slice())
                .map_err(|_| {
                    Error::denied(format!(
                        "{origin}: wrong password for the encrypted key (set COSIGN_PASSWORD)"
                    ))
                })?;
            SigningKey::from_pkcs8_der(&plain).map_err(|e| {
                Error::invalid(format!(
                    "{origin}: the decrypted key is not an ECDSA P-256 key: {e}"
                ))
            })
        }
        "PRIVATE KEY" => SigningKey::from_pkcs8_der(&der)
            .map_err(|e| Error::invalid(format!("{origin}: not an ECDSA P-256 PKCS#8 key: {e}"))),
        "EC PRIVATE KEY" => p256::SecretKey::from_sec1_der(&der)
            .map(SigningKey::from)
            .map_err(|e| Error::invalid(format!("{origin}: not an ECDSA P-256 key: {e}"))),
        other => Err(Error::invalid(format!(
            "{origin}: PEM type '{other}' is not a private key (expected {PEM_SIGSTORE})"
        ))),
    }
}

/// Makes a key pair in cosign's format: (encrypted private PEM, public PEM).
pub fn generate_key_pair(password: &[u8]) -> Result<(String, String)> {
    let sk = SigningKey::random(&mut OsRng);
    let der = sk
        .to_pkcs8_der()
        .map_err(|e| Error::internal(format!("encoding the key: {e}")))?;
    let mut salt = [0u8; 32];
    let mut nonce = [0u8; 24];
    OsRng.fill_bytes(&mut salt);
    OsRng.fill_bytes(&mut nonce);
    let (n, r, p) = (32768u64, 8u32, 1u32);
    let key = secretbox_key(password, &salt, n, r, p)?;
    let ct = XSalsa20Poly1305::new(&key.into())
        .encrypt((&nonce).into(), der.as_bytes())
        .map_err(|_| Error::internal("encrypting the key"))?;
    let enc = Encrypted {
        kdf: Kdf {
            name: "scrypt".into(),
            params: ScryptParams { n, r, p },
            salt: B64.encode(salt),
        },
        cipher: Cipher {
            name: "nacl/secretbox".into(),
            nonce: B64.encode(nonce),
        },
        ciphertext: B64.encode(ct),
    };
    let json = serde_json::to_vec(&enc).map_err(|e| Error::internal(format!("{e}")))?;
    let private = pem_rfc7468::encode_string(PEM_SIGSTORE, pem_rfc7468::LineEnding::LF, &json)
        .map_err(|e| Error::internal(format!("PEM: {e}")))?;
    Ok((private, public_key_pem(sk.verifying_key())?))
}

/// The simple-signing payload for `repository` (registry/repo, no tag) at `digest`.
pub fn payload(repository: &str, digest: &str) -> Vec<u8> {
    serde_json::json!({
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest},
            "type": SIGNATURE_TYPE,
        },
        "optional": null,
    })
    .to_string()
    .into_bytes()
}

/// Signs `payload`: base64 of the DER ECDSA signature.
pub fn sign(key: &SigningKey, payload: &[u8]) -> String {
    let sig: Signature = key.sign(payload);
    let der: DerSignature = sig.to_der();
    B64.encode(der.as_bytes())
}

/// Strips a tag or digest from a docker reference, leaving registry/repository.
fn repository_of(docker_ref: &str) -> &str {
    let no_digest = docker_ref.split('@').next().unwrap_or(docker_ref);
    match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    }
}

/// Checks a base64 DER ECDSA P-256/SHA-256 signature over `data` (cosign's encoding).
pub fn verify_bytes(key: &VerifyingKey, data: &[u8], signature_b64: &str) -> Result<()> {
    let der = B64
        .decode(signature_b64.trim())
        .map_err(|_| Error::invalid("the signature annotation is not base64"))?;
    let sig = Signature::from_der(&der)
        .map_err(|e| Error::invalid(format!("the signature is not a DER ECDSA signature: {e}")))?;
    key.verify(data, &sig)
        .map_err(|_| Error::denied("the signature does not verify with the trusted key"))
}

/// Checks one signature: by `key`, over `payload`, which names `repository` and `digest`.
pub fn verify_one(
    key: &VerifyingKey,
    payload: &[u8],
    signature_b64: &str,
    repository: &str,
    digest: &str,
) -> Result<()> {
    verify_bytes(key, payload, signature_b64)?;
    // The signature is good; now the claims must be about this image.
    let v: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| Error::invalid(format!("the signed payload is not JSON: {e}")))?;
    let crit = &v["critical"];
    if crit["type"].as_str() != Some(SIGNATURE_TYPE) {
        return Err(Error::invalid(format!(
            "the signed payload has type {:?}, not '{SIGNATURE_TYPE}'",
            crit["type"]
        )));
    }
    let signed_digest = crit["image"]["docker-manifest-digest"]
        .as_str()
        .unwrap_or("");
    if signed_digest != digest {
        return Err(Error::denied(format!(
            "the signature is for manifest {signed_digest}, not {digest}"
        )));
    }
    let signed_ref = crit["identity"]["docker-reference"].as_str().unwrap_or("");
    if repository_of(signed_ref) != repository {
        return Err(Error::denied(format!(
            "the signature is for {signed_ref}, not {repository}"
        )));
    }
    Ok(())
}

/// The config blob cosign writes for a signature manifest.
pub fn signature_config(layers: &[Descriptor]) -> Vec<u8> {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
    serde_json::json!({
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    })
    .to_string()
    .into_bytes()
}

/// A signature manifest holding `layers`, with its config. Returns (manifest, config).
pub fn signature_manifest(layers: Vec<Descriptor>) -> Result<(Vec<u8>, Vec<u8>)> {
    let config = signature_config(&layers);
    let m = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_string()),
        config: Descriptor::of(OCI_CONFIG, &config),
        layers,
        annotations: BTreeMap::new(),
    };
    let raw = serde_json::to_vec(&m).map_err(|e| Error::internal(format!("{e}")))?;
    Ok((raw, config))
}

/// A signature layer descriptor for `payload` signed as `signature`.
pub fn signature_layer(payload: &[u8], signature: &str) -> Descriptor {
    let mut d = Descriptor::of(SIMPLE_SIGNING, payload);
    d.annotations
        .insert(SIGNATURE_ANNOTATION.to_string(), signature.to_string());
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::format::sha256_digest;

    #[test]
    fn key_pair_round_trip_sign_verify() {
        let (private, public) = generate_key_pair(b"pw").unwrap_or_default();
        assert!(private.contains(PEM_SIGSTORE));
        let sk = parse_private_key(&private, b"pw", "k").ok();
        let Some(sk) = sk else {
            panic!("key did not decrypt")
        };
        let e = parse_private_key(&private, b"wrong", "k")
            .err()
            .map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("wrong password"));
        let pk = parse_public_key(&public, "p").ok();
        let Some(pk) = pk else { panic!("public key") };
        let digest = sha256_digest(b"manifest");
        let p = payload("127.0.0.1:5000/a/b", &digest);
        let s = sign(&sk, &p);
        assert!(verify_one(&pk, &p, &s, "127.0.0.1:5000/a/b", &digest).is_ok());
        // Wrong digest, wrong repository, tampered payload, other key.
        assert!(verify_one(&pk, &p, &s, "127.0.0.1:5000/a/b", &sha256_digest(b"x")).is_err());
        assert!(verify_one(&pk, &p, &s, "127.0.0.1:5000/a/c", &digest).is_err());
        let mut bad = p.clone();
        bad[5] ^= 1;
        assert!(verify_one(&pk, &bad, &s, "127.0.0.1:5000/a/b", &digest).is_err());
        let (_, other) = generate_key_pair(b"pw").unwrap_or_default();
        let other = parse_public_key(&other, "o").ok();
        let Some(other) = other else {
            panic!("other key")
        };
        assert!(verify_one(&other, &p, &s, "127.0.0.1:5000/a/b", &digest).is_err());
        assert_ne!(fingerprint(&pk), fingerprint(&other));
    }

    /// Artefacts made by the real cosign (`cosign generate-key-pair` with an empty
    /// password, then `cosign sign-blob`), published as test data by the Constellation
    /// project: our key reader must decrypt cosign's key and our verifier accept its
    /// signature encoding.
    #[test]
    fn reads_keys_and_signatures_made_by_cosign() {
        let private = "-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----
eyJrZGYiOnsibmFtZSI6InNjcnlwdCIsInBhcmFtcyI6eyJOIjozMjc2OCwiciI6
OCwicCI6MX0sInNhbHQiOiJlRHVYMWRQMGtIWVRnK0xkbjcxM0tjbFVJaU92eFVX
VXgvNi9BbitFVk5BPSJ9LCJjaXBoZXIiOnsibmFtZSI6Im5hY2wvc2VjcmV0Ym94
Iiwibm9uY2UiOiJwaWhLL2txNmFXa2hqSVVHR3RVUzhTVkdHTDNIWWp4TCJ9LCJj
aXBoZXJ0ZXh0Ijoidm81SHVWRVFWcUZ2WFlQTTVPaTVaWHM5a255bndZU2dvcyth
VklIeHcrOGFPamNZNEtvVjVmL3lHRHR0K3BHV2toanJPR1FLOWdBbmtsazFpQ0c5
a2czUXpPQTZsU2JRaHgvZlowRVRZQ0hLeElncEdPRVRyTDlDenZDemhPZXVSOXJ6
TDcvRjBBVy9vUDVqZXR3dmJMNmQxOEhjck9kWE8yVmYxY2w0YzNLZjVRcnFSZzlN
dlRxQWFsNXJCNHNpY1JaMVhpUUJjb0YwNHc9PSJ9
-----END ENCRYPTED COSIGN PRIVATE KEY-----";
        let public = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEu78QgxOOcao6U91CSzEXxrKhvFTt
JHNy+eX6EMePtDm8CnDF9HSwnTlD0itGJ/XHPQA5YX10fJAqI1y+ehlFMw==
-----END PUBLIC KEY-----";
        let sk = parse_private_key(private, b"", "cosign.key");
        let pk = parse_public_key(public, "cosign.pub");
        let (Ok(sk), Ok(pk)) = (sk, pk) else {
            panic!("cosign's key pair did not parse")
        };
        assert_eq!(
            sk.verifying_key(),
            &pk,
            "decrypted key is not the public key's pair"
        );
        let blob = b"This is some content to be signed!\n";
        let sig = "MEUCIQCGA/lSu5qCJgNNvgMaTKJ9rj6vQMecUDaQo3ukaiAfUgIgWoxXRoDKLY9naN7YgxokM7r2fwnyYk3M2WKJJO1g6yo=";
        assert!(verify_bytes(&pk, blob, sig).is_ok());
        assert!(verify_bytes(&pk, b"other content", sig).is_err());
        // And cosign's verifier would accept ours: same key, our encoding.
        assert!(verify_bytes(&pk, blob, &sign(&sk, blob)).is_ok());
    }

    #[test]
    fn repository_of_strips_tag_and_digest() {
        assert_eq!(repository_of("127.0.0.1:5000/a/b:v1"), "127.0.0.1:5000/a/b");
        assert_eq!(repository_of("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b");
        assert_eq!(repository_of("quay.io/a/b@sha256:00"), "quay.io/a/b");
    }
}
