//! Owns the sub-structures every bpfman.io resource shares: where bytecode comes from, which
//! interfaces, network namespaces and containers a link selects, global data (in both forms
//! that exist in clusters), and the schema pieces controller-gen writes for Kubernetes' own
//! types (label selectors, conditions) that k8s-openapi's schemas lack.

use std::collections::BTreeMap;

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

spec_enum!(
    /// When an image is pulled, as Kubernetes names it.
    #[derive(Default)]
    PullPolicy {
        /// Pull on every load.
        Always = "Always",
        /// Never pull: the image must already be in the node's cache.
        Never = "Never",
        /// Pull only when the node does not have the image.
        #[default]
        IfNotPresent = "IfNotPresent",
    }
);

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

/// The value of one global variable.
///
/// Two forms exist in real clusters: base64 strings (the schema's `format: byte`, and what
/// server-side apply accepts) and YAML integer lists such as `[0x01]` (upstream's own samples;
/// create and client-side apply store them as given). Both are read, base64 as Go reads it
/// (non-zero trailing bits allowed, as the API server allows them); base64 is written.
///
/// A value that is neither (a list holding -1, 256, 1.5, `null`...; `create` stores such
/// lists) is kept as [`GlobalValue::Invalid`] rather than refused, so one bad value makes its
/// own application fail with a message instead of making every application unreadable.
#[derive(Clone, Debug, PartialEq)]
pub enum GlobalValue {
    /// The bytes to write into the variable.
    Bytes(Vec<u8>),
    /// What was stored, kept verbatim (and written back as it was), and why it is not bytes.
    Invalid {
        stored: serde_json::Value,
        problem: String,
    },
}

/// Global data: variable name to value.
pub type GlobalData = BTreeMap<String, GlobalValue>;

impl Default for GlobalValue {
    fn default() -> Self {
        Self::Bytes(Vec::new())
    }
}

impl From<Vec<u8>> for GlobalValue {
    fn from(b: Vec<u8>) -> Self {
        Self::Bytes(b)
    }
}

impl GlobalValue {
    /// The bytes, or what is wrong with the stored value.
    pub fn bytes(&self) -> Result<&[u8], &str> {
        match self {
            Self::Bytes(b) => Ok(b),
            Self::Invalid { problem, .. } => Err(problem),
        }
    }

    fn from_value(v: serde_json::Value) -> Self {
        use serde_json::Value;
        let invalid = |stored: Value, problem: String| Self::Invalid { stored, problem };
        match v {
            Value::String(s) => match GO_BASE64.decode(&s) {
                Ok(b) => Self::Bytes(b),
                Err(e) => invalid(Value::String(s), format!("not base64 ({e})")),
            },
            Value::Array(items) => {
                let mut bytes = Vec::with_capacity(items.len());
                for item in &items {
                    let byte = match item {
                        Value::Number(n) => n
                            .as_u64()
                            .or_else(|| {
                                n.as_f64()
                                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                                    .map(|f| f as u64)
                            })
                            .and_then(|u| u8::try_from(u).ok()),
                        _ => None,
                    };
                    match byte {
                        Some(b) => bytes.push(b),
                        None => {
                            return invalid(
                                Value::Array(items.clone()),
                                format!("the list holds {item}, which is not a byte (0..=255)"),
                            );
                        }
                    }
                }
                Self::Bytes(bytes)
            }
            other => {
                let problem = format!("{other} is neither a base64 string nor a list of bytes");
                invalid(other, problem)
            }
        }
    }
}

/// Base64 as Go's `encoding/base64.StdEncoding` (what the API server and upstream's agent use)
/// reads it: padded, non-zero trailing bits allowed.
const GO_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

impl Serialize for GlobalValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Bytes(b) => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b)),
            Self::Invalid { stored, .. } => stored.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for GlobalValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(d).map(Self::from_value)
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

/// Reads an optional kernel id leniently: the schema says `format: int32` and writers may
/// store negative numbers; anything outside 0..=u32::MAX reads as no id (the agent then
/// re-checks the kernel) instead of making the whole object unreadable.
pub fn lenient_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(v.and_then(|v| v.as_u64())
        .and_then(|u| u32::try_from(u).ok()))
}

/// A condition as the Kubernetes API defines `metav1.Condition`, with the transition time kept
/// as the string stored: the API server's `date-time` check accepts times k8s-openapi's `Time`
/// cannot parse (a `+99:99` offset, 13 fraction digits), which would make the whole State or
/// application unreadable.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The condition type.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// A CamelCase reason; must match [`CONDITION_REASON_PATTERN`].
    pub reason: String,
    /// What happened and what to do.
    #[serde(default)]
    pub message: String,
    /// RFC 3339, as stored.
    #[serde(default)]
    pub last_transition_time: String,
    /// The generation the condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Now, as a condition's `lastTransitionTime` (RFC 3339, seconds, UTC).
pub fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
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

/// Declares a string enum: the values this version knows as variants, anything else read
/// into `Other` instead of refused (an object stored under another CRD version's wider enum
/// still reads, and only its own application is reported as unsupported). `schema: enum`
/// lists the known values in the schema (spec fields, as upstream's); `schema: plain` makes it
/// a plain string (status strings, which upstream's schema does not enumerate).
macro_rules! string_enum {
    (@schema enum, $($text:literal),+) => {
        schemars::json_schema!({ "type": "string", "enum": [$($text),+] })
    };
    (@schema plain, $($text:literal),+) => {
        schemars::json_schema!({ "type": "string" })
    };
    (schema: $kind:ident, $(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this version does not know, kept as written.
            Other(String),
        }

        impl $name {
            /// Every value this version knows, in the schema's order.
            pub const KNOWN: &'static [$name] = &[$(Self::$variant),+];

            /// The string written to the API.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)+
                    Self::Other(s) => s,
                }
            }

            /// Whether this version knows the value.
            pub fn is_known(&self) -> bool {
                !matches!(self, Self::Other(_))
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
                $crate::v1alpha1::shared::string_enum!(@schema $kind, $($text),+)
            }
        }
    };
}

/// A spec enum (values listed in the schema).
macro_rules! spec_enum {
    ($($t:tt)*) => { $crate::v1alpha1::shared::string_enum!(schema: enum, $($t)*); };
}

/// A status string (a plain string in the schema).
macro_rules! status_string {
    ($($t:tt)*) => { $crate::v1alpha1::shared::string_enum!(schema: plain, $($t)*); };
}
pub(crate) use {spec_enum, status_string, string_enum};

#[cfg(test)]
mod tests {
    use super::*;

    fn b(v: &GlobalValue) -> &[u8] {
        v.bytes().expect("bytes")
    }

    #[test]
    fn global_data_reads_both_stored_forms_and_writes_base64() {
        let from_list: GlobalData =
            serde_json::from_str(r#"{"GLOBAL_u8":[1],"GLOBAL_u32":[13,12,11,10]}"#)
                .expect("integer lists");
        let from_b64: GlobalData =
            serde_json::from_str(r#"{"GLOBAL_u8":"AQ==","GLOBAL_u32":"DQwLCg=="}"#)
                .expect("base64");
        assert_eq!(from_list, from_b64);
        assert_eq!(b(&from_list["GLOBAL_u32"]), [13, 12, 11, 10]);
        let out = serde_json::to_string(&from_list).expect("serialize");
        assert_eq!(out, r#"{"GLOBAL_u32":"DQwLCg==","GLOBAL_u8":"AQ=="}"#);
    }

    #[test]
    fn global_data_keeps_what_is_neither_form_and_says_why() {
        for (json, why) in [
            (r#"{"g":[256]}"#, "256"),
            (r#"{"g":[-1]}"#, "-1"),
            (r#"{"g":[1.5]}"#, "1.5"),
            (r#"{"g":[null]}"#, "null"),
            (r#"{"g":"not base64!"}"#, "not base64"),
            (r#"{"g":7}"#, "neither a base64 string"),
        ] {
            let gd: GlobalData = serde_json::from_str(json).expect("read, not refused");
            let problem = gd["g"].bytes().expect_err("not bytes");
            assert!(problem.contains(why), "{json}: {problem}");
            // Written back exactly as stored: reading never rewrites someone's data.
            let back: serde_json::Value = serde_json::to_value(&gd).expect("serialize");
            let orig: serde_json::Value = serde_json::from_str(json).expect("json");
            assert_eq!(back, orig);
        }
    }

    #[test]
    fn global_data_base64_reads_as_go_does() {
        // Non-zero trailing bits: Go's StdEncoding (and the API server) accept them.
        let gd: GlobalData =
            serde_json::from_str(r#"{"a":"AR==","b":"AB==","c":"AAB="}"#).expect("read");
        assert_eq!(
            (b(&gd["a"]), b(&gd["b"]), b(&gd["c"])),
            (&[1u8][..], &[0u8][..], &[0u8, 0][..])
        );
        // Integral floats in lists (YAML 1.0) are bytes too.
        let gd: GlobalData = serde_json::from_str(r#"{"a":[1.0, 255.0]}"#).expect("read");
        assert_eq!(b(&gd["a"]), [1, 255]);
    }

    #[test]
    fn ids_outside_u32_read_as_none() {
        #[derive(Deserialize)]
        struct W {
            #[serde(default, deserialize_with = "lenient_id")]
            id: Option<u32>,
        }
        for (json, want) in [
            (r#"{"id":5}"#, Some(5)),
            (r#"{"id":4294967295}"#, Some(u32::MAX)),
            (r#"{"id":-1}"#, None),
            (r#"{"id":4294967296}"#, None),
            (r#"{"id":null}"#, None),
            (r#"{}"#, None),
        ] {
            let w: W = serde_json::from_str(json).expect(json);
            assert_eq!(w.id, want, "{json}");
        }
    }
}
