//! Owns the `Config` kind: the cluster-wide singleton (`bpfman-config`) from which the operator
//! deploys the daemon and agent (images, log levels, the daemon's `bpfman.toml`, the namespace)
//! and the `overrides` escape hatch that leaves chosen objects unmanaged.

use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use super::shared::{Condition, conditions};

/// The only Config the operator reconciles.
pub const CONFIG_NAME: &str = "bpfman-config";

/// How bpfman is deployed on the cluster.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "bpfman.io",
    derive = "PartialEq",
    version = "v1alpha1",
    kind = "Config",
    plural = "configs",
    status = "ConfigStatus",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ConfigSpec {
    /// The agent container.
    pub agent: AgentSpec,
    /// The daemon's `bpfman.toml`, verbatim.
    #[schemars(length(min = 1))]
    pub configuration: String,
    /// The daemon container.
    pub daemon: DaemonSpec,
    /// Where the operator deploys the daemon and agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Objects the operator must leave alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "overrides")]
    pub overrides: Option<Vec<ComponentOverride>>,
}

/// The agent container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentSpec {
    /// The agent image.
    #[schemars(length(min = 1))]
    pub image: String,
    /// The agent's log level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// The agent's health probe port.
    #[serde(default = "default_health_probe_port")]
    #[schemars(schema_with = "health_probe_port")]
    pub health_probe_port: i32,
}

fn default_health_probe_port() -> i32 {
    8175
}

// Go `int` carries no format; keep the schema as upstream's.
fn health_probe_port(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "The agent's health probe port.",
        "type": "integer", "minimum": 1, "maximum": 65535, "default": 8175
    })
}

/// The daemon container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaemonSpec {
    /// The daemon image.
    #[schemars(length(min = 1))]
    pub image: String,
    /// The daemon's log level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// The CSI node-driver-registrar image, where one is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csi_registrar_image: Option<String>,
}

/// One object the operator must not manage.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentOverride {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
    /// `true`: the operator neither creates nor corrects it.
    pub unmanaged: bool,
}

fn overrides(generator: &mut SchemaGenerator) -> Schema {
    let item = generator.subschema_for::<ComponentOverride>();
    json_schema!({
        "description": "Objects the operator must leave alone.",
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["kind", "apiVersion", "namespace", "name"],
        "items": item
    })
}

/// The Config's status (conditions only).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ConfigStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions")]
    pub conditions: Vec<Condition>,
}
