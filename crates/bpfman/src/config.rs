//! The daemon's configuration file (TOML, default `/etc/bpfman/bpfman.toml`).
//! Unknown keys are errors, so a typo never silently turns a setting off.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::policy::PolicyConfig;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub api: ApiConfig,
    /// Per-interface settings, e.g. `[interfaces.eth0] xdp_mode = "skb"`.
    #[serde(default)]
    pub interfaces: BTreeMap<String, InterfaceConfig>,
    /// Who may do what (see docs/security.md).
    #[serde(default)]
    pub policy: PolicyConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Group that owns the socket (mode 0660). Default "bpfman"; when that group does
    /// not exist the socket stays root's only.
    pub socket_group: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    /// "drv", "skb", "hw" or unset (the kernel chooses).
    pub xdp_mode: Option<String>,
}

impl Config {
    /// Parses a config file's text; errors name the line.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let c: Config = toml::from_str(text).map_err(|e| {
            let pos = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(" at line {line}")
                })
                .unwrap_or_default();
            Error::invalid(format!("config {origin}{pos}: {}", e.message()))
        })?;
        for (iface, i) in &c.interfaces {
            if let Some(m) = &i.xdp_mode
                && !["drv", "skb", "hw"].contains(&m.as_str())
            {
                return Err(Error::invalid(format!(
                    "config {origin}: interfaces.{iface}.xdp_mode = '{m}': use drv, skb or hw"
                )));
            }
        }
        Ok(c)
    }

    /// Reads `path`; a missing file at the default location means defaults.
    pub fn load(path: &Path, required: bool) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(Self::default()),
            Err(e) => Err(Error::invalid(format!(
                "reading config {}: {e}",
                path.display()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_typos_with_line() {
        let c = Config::parse("[api]\nsocket_group = \"bpfman\"\n", "t").ok();
        assert_eq!(
            c.and_then(|c| c.api.socket_group).as_deref(),
            Some("bpfman")
        );
        let e = Config::parse("[api]\n\nsocket_grup = 1\n", "t")
            .err()
            .map(|e| e.to_string());
        let e = e.unwrap_or_default();
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("socket_grup"), "{e}");
    }
}
