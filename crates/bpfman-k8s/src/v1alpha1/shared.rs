//! Owns the sub-structures every bpfman.io resource shares: where bytecode comes from, which
//! interfaces, network namespaces and containers a link selects, global data (in both forms
//! that exist in clusters), and the schema pieces controller-gen writes for Kubernetes' own
//! types (label selectors, conditions) that k8s-openapi's schemas lack.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The pattern upstream puts on program, function and tracepoint names. It is unanchored at
/// the end, so it forces at least three characters and nothing else about the tail: kept as is
/// so every name upstream accepts is accepted here.
pub const NAME_PATTERN: &str = "^[a-zA-Z][a-zA-Z0-9_]+.";

/// Where a program's bytecode comes from: exactly one of an OCI image or a file on the node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct ByteCodeSelector {
    /// An OCI image holding the bytecode (bpfman's image labels name the programs in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ByteCodeImage>,
    /// An absolute path to a bytecode file on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(/[^/\0]+)+/?$"))]
    pub path: Option<String>,
}

/// A bytecode image and how to pull it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ByteCodeImage {
    /// The image reference, e.g. `quay.io/bpfman-bytecode/xdp_pass:latest`.
    #[schemars(
        length(max = 525),
        regex(pattern = "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
    )]
    pub url: String,
    /// When to pull the image.
    #[serde(default)]
    pub image_pull_policy: PullPolicy,
    /// A `kubernetes.io/dockerconfigjson` Secret with the registry credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<ImagePullSecret>,
}

/// When an image is pulled, as Kubernetes names it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    /// Pull on every load.
    Always,
    /// Never pull: the image must already be in the node's cache.
    Never,
    /// Pull only when the node does not have the image.
    #[default]
    IfNotPresent,
}

/// The Secret holding registry credentials.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct ImagePullSecret {
    /// The Secret's name.
    pub name: String,
    /// The Secret's namespace.
    pub namespace: String,
}

/// Which interfaces a network link attaches to: exactly one of the three forms.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct InterfaceSelector {
    /// Interfaces named explicitly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<String>>,
    /// Interfaces found on the node as they come and go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces_discovery_config: Option<InterfaceDiscovery>,
    /// The node's primary interface: the one holding the Node's InternalIP. Only `true` means
    /// anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_node_interface: Option<bool>,
}

/// Interface discovery: which discovered interfaces a link follows.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceDiscovery {
    /// Interfaces matching any entry are used; an entry written `/re/` is a regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_interfaces: Option<Vec<String>>,
    /// Interfaces never used, even when allowed.
    #[serde(default = "default_excluded_interfaces")]
    pub exclude_interfaces: Vec<String>,
    /// Whether discovery is on.
    #[serde(default)]
    pub interface_auto_discovery: bool,
}

fn default_excluded_interfaces() -> Vec<String> {
    vec!["lo".to_string()]
}

/// Pods whose network namespaces a cluster-scoped application's link enters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkNamespaceSelector {
    /// The pods' namespace; all namespaces when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Which pods on the node.
    #[schemars(schema_with = "label_selector")]
    pub pods: LabelSelector,
}

/// Pods (in the application's own namespace) whose network namespaces a namespaced
/// application's link enters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkNamespaceSelector {
    /// Which pods on the node.
    #[schemars(schema_with = "label_selector")]
    pub pods: LabelSelector,
}

/// Containers a cluster-scoped application's uprobe enters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterContainerSelector {
    /// The pods' namespace; all namespaces when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Which pods on the node.
    #[schemars(schema_with = "label_selector")]
    pub pods: LabelSelector,
    /// Which containers of those pods; all when absent or empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_names: Option<Vec<String>>,
}

/// Containers (in the application's own namespace) a namespaced application's uprobe enters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSelector {
    /// Which pods on the node.
    #[schemars(schema_with = "label_selector")]
    pub pods: LabelSelector,
    /// Which containers of those pods; all when absent or empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_names: Option<Vec<String>>,
}

/// The value of one global variable, as raw bytes.
///
/// Two forms exist in real clusters: base64 strings (the schema's `format: byte`, and what
/// server-side apply accepts) and YAML integer lists such as `[0x01]` (upstream's own samples;
/// create and client-side apply store them as given). Both are read; base64 is written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GlobalValue(pub Vec<u8>);

/// Global data: variable name to value.
pub type GlobalData = BTreeMap<String, GlobalValue>;

impl Serialize for GlobalValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for GlobalValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = GlobalValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a base64 string or a list of byte values (0..=255)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<GlobalValue, E> {
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map(GlobalValue)
                    .map_err(|e| E::custom(format!("global data value {v:?} is not base64: {e}")))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<GlobalValue, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(v) = seq.next_element::<i64>()? {
                    let b = u8::try_from(v).map_err(|_| {
                        serde::de::Error::custom(format!(
                            "global data list holds {v}, which is not a byte (0..=255)"
                        ))
                    })?;
                    bytes.push(b);
                }
                Ok(GlobalValue(bytes))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl JsonSchema for GlobalValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "GlobalValue".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "format": "byte" })
    }
}

/// A label selector as controller-gen writes `metav1.LabelSelector`: atomic, with atomic
/// expression lists (k8s-openapi's schema carries neither marker).
pub fn label_selector(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "A label selector: matchLabels and matchExpressions are ANDed; an empty selector matches everything.",
        "type": "object",
        "x-kubernetes-map-type": "atomic",
        "properties": {
            "matchExpressions": {
                "description": "Label selector requirements, ANDed.",
                "type": "array",
                "x-kubernetes-list-type": "atomic",
                "items": {
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": { "description": "The label key.", "type": "string" },
                        "operator": { "description": "In, NotIn, Exists or DoesNotExist.", "type": "string" },
                        "values": {
                            "description": "The values, for In and NotIn.",
                            "type": "array",
                            "x-kubernetes-list-type": "atomic",
                            "items": { "type": "string" }
                        }
                    }
                }
            },
            "matchLabels": {
                "description": "Labels that must all be present with these values.",
                "type": "object",
                "additionalProperties": { "type": "string" }
            }
        }
    })
}

/// The pattern the Kubernetes API puts on a condition's reason. Every reason bpfman writes
/// must match it, or the API server refuses the whole status write.
pub const CONDITION_REASON_PATTERN: &str = "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$";

/// A list of `metav1.Condition`, keyed by type, as controller-gen writes it.
pub fn conditions(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "The latest observations of the object's state, one per condition type.",
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "lastTransitionTime": {
                    "description": "When the condition last changed status.",
                    "type": "string", "format": "date-time"
                },
                "message": {
                    "description": "A human-readable message: what happened and what to do.",
                    "type": "string", "maxLength": 32768
                },
                "observedGeneration": {
                    "description": "The generation the condition was set for.",
                    "type": "integer", "format": "int64", "minimum": 0
                },
                "reason": {
                    "description": "A CamelCase reason for the last transition.",
                    "type": "string", "maxLength": 1024, "minLength": 1,
                    "pattern": CONDITION_REASON_PATTERN
                },
                "status": {
                    "description": "True, False or Unknown.",
                    "type": "string", "enum": ["True", "False", "Unknown"]
                },
                "type": {
                    "description": "The condition type, CamelCase or foo.example.com/CamelCase.",
                    "type": "string", "maxLength": 316,
                    "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
                }
            }
        }
    })
}

/// Declares a string-valued status enum: known values as variants, anything else kept verbatim
/// in `Other` (a newer agent may write values this one does not know). The schema is a plain
/// string, as upstream's.
macro_rules! status_string {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this version does not know, kept as written.
            Other(String),
        }

        impl $name {
            /// The string written to the API.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)+
                    Self::Other(s) => s,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($text => Self::$variant,)+
                    other => Self::Other(other.to_string()),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Ok(Self::from(s.as_str()))
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn inline_schema() -> bool {
                true
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string" })
            }
        }
    };
}
pub(crate) use status_string;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_data_reads_both_stored_forms_and_writes_base64() {
        let from_list: GlobalData =
            serde_json::from_str(r#"{"GLOBAL_u8":[1],"GLOBAL_u32":[13,12,11,10]}"#)
                .expect("integer lists");
        let from_b64: GlobalData =
            serde_json::from_str(r#"{"GLOBAL_u8":"AQ==","GLOBAL_u32":"DQwLCg=="}"#)
                .expect("base64");
        assert_eq!(from_list, from_b64);
        assert_eq!(from_list["GLOBAL_u32"].0, vec![13, 12, 11, 10]);
        let out = serde_json::to_string(&from_list).expect("serialize");
        assert_eq!(out, r#"{"GLOBAL_u32":"DQwLCg==","GLOBAL_u8":"AQ=="}"#);
    }

    #[test]
    fn global_data_refuses_what_is_neither_form_and_says_why() {
        let e = serde_json::from_str::<GlobalData>(r#"{"g":[256]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("256") && e.contains("not a byte"), "{e}");
        let e = serde_json::from_str::<GlobalData>(r#"{"g":"not base64!"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not base64"), "{e}");
        let e = serde_json::from_str::<GlobalData>(r#"{"g":7}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("base64 string or a list"), "{e}");
    }
}
