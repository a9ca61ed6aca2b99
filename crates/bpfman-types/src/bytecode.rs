//! Where bytecode comes from (a file on the daemon's host or an OCI image) and how an
//! image is pulled; which functions of an object to load.

use serde::{Deserialize, Serialize};

use crate::{Invalid, ProgramKind};

/// Where a program's bytecode came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bytecode {
    File(String),
    Image {
        url: String,
        pull_policy: i32,
        /// The digest the image resolved to when it was loaded (provenance).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
    },
}

/// One program to load from an object: its function name, kind, and the load-time
/// target (fentry/fexit function, LSM hook).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramSpec {
    pub name: String,
    pub kind: ProgramKind,
    pub attach_fn: Option<String>,
}

/// When the daemon fetches an image (upstream's numbering on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn from_i32(v: i32) -> Result<Self, Invalid> {
        match v {
            0 => Ok(Self::Always),
            1 => Ok(Self::IfNotPresent),
            2 => Ok(Self::Never),
            _ => Err(Invalid(format!(
                "pull policy {v} is unknown: use 0 (Always), 1 (IfNotPresent) or 2 (Never)"
            ))),
        }
    }
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        match s.to_ascii_lowercase().as_str() {
            "always" => Ok(Self::Always),
            "ifnotpresent" => Ok(Self::IfNotPresent),
            "never" => Ok(Self::Never),
            _ => Err(Invalid(format!(
                "pull policy '{s}' is unknown: use Always, IfNotPresent or Never"
            ))),
        }
    }
    pub fn as_i32(self) -> i32 {
        match self {
            Self::Always => 0,
            Self::IfNotPresent => 1,
            Self::Never => 2,
        }
    }
}
