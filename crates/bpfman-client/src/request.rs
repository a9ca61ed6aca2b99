//! Building a `bpfman.v1` load request from the vocabulary.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use bpfman_api::v1;
use bpfman_types::{ProgramSpec, PullPolicy, proto};

use crate::Error;

/// A load request: where the bytecode is, which functions to load, and what goes with
/// them. [`Load::request`] writes its wire form.
#[derive(Debug, Clone, Default)]
pub struct Load {
    pub programs: Vec<ProgramSpec>,
    pub global_data: BTreeMap<String, Vec<u8>>,
    pub metadata: HashMap<String, String>,
    pub map_owner_id: Option<u32>,
    /// Upstream's `uuid` (kept as the `bpfman.io/uuid` metadata of each program).
    pub uuid: Option<String>,
}

impl Load {
    /// The request loading from a file on the daemon's host (an absolute path: the daemon
    /// does not know the caller's working directory).
    pub fn from_file(&self, path: &str) -> v1::LoadRequest {
        self.request(v1::bytecode_location::Location::File(path.to_string()))
    }

    /// The request loading from an image, with optional registry credentials.
    pub fn from_image(
        &self,
        url: &str,
        policy: PullPolicy,
        auth: Option<(String, String)>,
    ) -> v1::LoadRequest {
        let (username, password) = match auth {
            Some((u, p)) => (Some(u), Some(p)),
            None => (None, None),
        };
        self.request(v1::bytecode_location::Location::Image(v1::BytecodeImage {
            url: url.to_string(),
            image_pull_policy: policy.as_i32(),
            username,
            password,
        }))
    }

    fn request(&self, location: v1::bytecode_location::Location) -> v1::LoadRequest {
        v1::LoadRequest {
            bytecode: Some(v1::BytecodeLocation {
                location: Some(location),
            }),
            info: self.programs.iter().map(proto::load_info).collect(),
            metadata: self.metadata.clone(),
            global_data: self.global_data.clone().into_iter().collect(),
            uuid: self.uuid.clone(),
            map_owner_id: self.map_owner_id,
        }
    }
}

/// Registry credentials from `--registry-auth`: base64 of `USER:PASSWORD`.
pub fn registry_auth_from_base64(b64: &str) -> Result<(String, String), Error> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| {
            Error::invalid("--registry-auth is not base64; give base64 of USER:PASSWORD".into())
        })?;
    let s = String::from_utf8(raw).map_err(|_| {
        Error::invalid("--registry-auth does not decode to text USER:PASSWORD".into())
    })?;
    let (u, p) = s.split_once(':').ok_or_else(|| {
        Error::invalid("--registry-auth must be base64 of USER:PASSWORD (no ':' found)".into())
    })?;
    Ok((u.to_string(), p.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpfman_types::ProgramKind;

    #[test]
    fn auth_decodes() {
        assert_eq!(
            registry_auth_from_base64("YWxpY2U6czNjcmV0").ok(),
            Some(("alice".to_string(), "s3cret".to_string()))
        );
        assert!(registry_auth_from_base64("!!").is_err());
        assert!(registry_auth_from_base64("YWxpY2U=").is_err());
    }

    #[test]
    fn load_request_carries_everything() {
        let l = Load {
            programs: vec![ProgramSpec {
                name: "f".into(),
                kind: ProgramKind::Fentry,
                attach_fn: Some("do_unlinkat".into()),
            }],
            global_data: [("g".to_string(), vec![1u8])].into(),
            metadata: [("app".to_string(), "x".to_string())].into(),
            map_owner_id: Some(9),
            uuid: Some("u".into()),
        };
        let r = l.from_image(
            "quay.io/x:1",
            PullPolicy::Never,
            Some(("a".into(), "b".into())),
        );
        assert_eq!(r.info.len(), 1);
        assert_eq!(r.map_owner_id, Some(9));
        assert_eq!(r.global_data.get("g"), Some(&vec![1u8]));
        match r.bytecode.and_then(|b| b.location) {
            Some(v1::bytecode_location::Location::Image(i)) => {
                assert_eq!(i.image_pull_policy, 2);
                assert_eq!(i.username.as_deref(), Some("a"));
            }
            other => panic!("not an image: {other:?}"),
        }
    }
}
