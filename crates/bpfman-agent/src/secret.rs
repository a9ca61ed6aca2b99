//! Owns reading registry credentials out of an image pull Secret
//! (`kubernetes.io/dockerconfigjson`, or the older `.dockercfg`), for the registry an image
//! reference names, as upstream's agent does (`docker.io` is also looked up under
//! `https://index.docker.io/v1/`).

use base64::Engine as _;

/// The registry host of an image reference (`docker.io` when it names none).
pub fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_string()
        }
        _ => "docker.io".to_string(),
    }
}

/// (user, password) for `image` from the Secret's data, or why not.
pub fn credentials(
    data: &std::collections::BTreeMap<String, Vec<u8>>,
    image: &str,
) -> Result<(String, String), String> {
    let (raw, nested) = if let Some(v) = data.get(".dockerconfigjson") {
        (v, true)
    } else if let Some(v) = data.get(".dockercfg") {
        (v, false)
    } else {
        return Err("the pull secret has neither .dockerconfigjson nor .dockercfg".into());
    };
    let v: serde_json::Value = serde_json::from_slice(raw)
        .map_err(|e| format!("the pull secret's docker config is not JSON: {e}"))?;
    let auths = if nested { &v["auths"] } else { &v };
    let auths = auths
        .as_object()
        .ok_or("the pull secret's docker config has no auths")?;
    let registry = registry_of(image);
    let mut candidates = vec![registry.clone(), format!("https://{registry}")];
    if registry == "docker.io" {
        candidates.push("https://index.docker.io/v1/".into());
        candidates.push("index.docker.io".into());
    }
    let entry = auths
        .iter()
        .find(|(k, _)| {
            let k = k.trim_end_matches('/');
            candidates
                .iter()
                .any(|c| c.trim_end_matches('/') == k || format!("https://{c}") == k)
        })
        .map(|(_, e)| e)
        .ok_or_else(|| format!("the pull secret has no credentials for registry {registry}"))?;
    if let (Some(u), Some(p)) = (entry["username"].as_str(), entry["password"].as_str()) {
        return Ok((u.to_string(), p.to_string()));
    }
    let auth = entry["auth"]
        .as_str()
        .ok_or_else(|| format!("the pull secret's entry for {registry} has no auth"))?;
    let plain = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .map_err(|_| format!("the pull secret's auth for {registry} is not base64"))?;
    let plain = String::from_utf8(plain)
        .map_err(|_| format!("the pull secret's auth for {registry} is not text"))?;
    let (u, p) = plain
        .split_once(':')
        .ok_or_else(|| format!("the pull secret's auth for {registry} is not USER:PASSWORD"))?;
    Ok((u.to_string(), p.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries() {
        assert_eq!(registry_of("quay.io/bpfman/x:1"), "quay.io");
        assert_eq!(registry_of("127.0.0.1:5000/x:1"), "127.0.0.1:5000");
        assert_eq!(registry_of("localhost/x"), "localhost");
        assert_eq!(registry_of("bpfman/x"), "docker.io");
        assert_eq!(registry_of("x"), "docker.io");
    }

    #[test]
    fn dockerconfigjson_auth_and_fields() {
        let cfg = br#"{"auths":{"127.0.0.1:5000":{"auth":"YWxpY2U6czNjcmV0"},"https://index.docker.io/v1/":{"username":"u","password":"p"}}}"#;
        let data = [(".dockerconfigjson".to_string(), cfg.to_vec())].into();
        assert_eq!(
            credentials(&data, "127.0.0.1:5000/a:b").unwrap(),
            ("alice".into(), "s3cret".into())
        );
        assert_eq!(
            credentials(&data, "bpfman/x:1").unwrap(),
            ("u".into(), "p".into())
        );
        let e = credentials(&data, "quay.io/x").unwrap_err();
        assert!(e.contains("no credentials for registry quay.io"), "{e}");
        let bad = [(".dockerconfigjson".to_string(), b"{".to_vec())].into();
        assert!(credentials(&bad, "x").unwrap_err().contains("not JSON"));
        assert!(
            credentials(&Default::default(), "x")
                .unwrap_err()
                .contains("neither")
        );
    }
}
