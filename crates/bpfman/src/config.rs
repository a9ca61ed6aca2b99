//! The daemon's configuration file (TOML, default `/etc/bpfman/bpfman.toml`).
//! Unknown keys are errors, so a typo never silently turns a setting off.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// Bytecode images: cache, registries, signatures (see docs/images.md).
    #[serde(default)]
    pub images: ImagesConfig,
    /// Limits and background work (see docs/reliability.md).
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// The Prometheus endpoint (see docs/metrics.md); off unless an address is given.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Upstream's `[signing]`, accepted so its configuration (and the Kubernetes Config's
    /// default) starts this daemon unchanged: it sets `[images.signatures]` where that
    /// section does not set the same key.
    #[serde(default)]
    pub signing: Option<UpstreamSigning>,
    /// Upstream's `[database]` (sled's open retries), accepted and unused: the store here is
    /// SQLite, opened once at start.
    #[serde(default)]
    pub database: Option<UpstreamDatabase>,
}

/// Upstream's `[signing]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSigning {
    pub allow_unsigned: Option<bool>,
    pub verify_enabled: Option<bool>,
}

/// Upstream's `[database]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamDatabase {
    pub max_retries: Option<u32>,
    pub millisec_delay: Option<u64>,
}

/// Which keys of `[images.signatures]` the text sets itself.
#[derive(Deserialize, Default)]
struct SignatureKeys {
    #[serde(default)]
    images: Option<ImagesKeys>,
}
#[derive(Deserialize, Default)]
struct ImagesKeys {
    #[serde(default)]
    signatures: Option<toml::Table>,
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// A TCP address to serve `/metrics` on, e.g. `127.0.0.1:9464`.
    pub listen: Option<String>,
    /// A unix socket to serve `/metrics` on (mode 0660, group `[api] socket_group`).
    pub socket: Option<PathBuf>,
    /// Hold kernel run statistics on (`BPF_ENABLE_STATS`, Linux 5.8+) while the daemon runs.
    #[serde(default)]
    pub program_stats: bool,
    /// Metadata keys that become labels of `bpfman_program_info`.
    #[serde(default)]
    pub metadata_labels: Vec<String>,
}

impl MetricsConfig {
    /// The TCP address, parsed.
    pub fn listen_addr(&self) -> Result<Option<std::net::SocketAddr>> {
        self.listen
            .as_deref()
            .map(|a| {
                a.parse().map_err(|e| {
                    Error::invalid(format!(
                        "[metrics] listen = '{a}': not an address and port ({e}); write e.g. \"127.0.0.1:9464\""
                    ))
                })
            })
            .transpose()
    }
}

/// `[daemon]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Seconds between background reconciliations that notice outside interference
    /// (pins removed, interfaces or namespaces deleted); 0 turns them off. Default 30.
    #[serde(default = "default_reconcile_interval")]
    pub reconcile_interval_secs: u64,
    /// The largest API request accepted, in bytes. Default 1 MiB (a load of 10,000
    /// programs is about 300 KiB).
    #[serde(default = "default_max_request")]
    pub max_request_bytes: usize,
    /// The largest bytecode file a load reads, in bytes. Default 64 MiB.
    #[serde(default = "default_max_bytecode")]
    pub max_bytecode_bytes: u64,
    /// The bytecode (files and image layers) held in memory by loads in progress, all
    /// callers together, in bytes; a load past it fails with RESOURCE_EXHAUSTED and may be
    /// retried. At least `max_bytecode_bytes`. Default 256 MiB.
    #[serde(default = "default_bytecode_in_flight")]
    pub max_bytecode_bytes_in_flight: u64,
    /// How long opening and reading a caller's file (bytecode, uprobe target) may take
    /// before the request fails. Default 10.
    #[serde(default = "default_file_timeout")]
    pub file_open_timeout_secs: u64,
    /// The most programs the daemon keeps loaded (all callers together). Default 1024.
    #[serde(default = "default_max_programs")]
    pub max_programs: u32,
    /// The most links (all callers together). Default 4096.
    #[serde(default = "default_max_links")]
    pub max_links: u32,
    /// Programs declared in files (`*.toml`), loaded at start and kept in line with the
    /// files. Default /etc/bpfman/programs.d.
    #[serde(default = "default_programs_dir")]
    pub programs_dir: PathBuf,
}

fn default_programs_dir() -> PathBuf {
    PathBuf::from("/etc/bpfman/programs.d")
}

fn default_reconcile_interval() -> u64 {
    30
}
fn default_max_request() -> usize {
    1 << 20
}
fn default_max_bytecode() -> u64 {
    64 << 20
}
fn default_bytecode_in_flight() -> u64 {
    256 << 20
}
fn default_file_timeout() -> u64 {
    10
}
fn default_max_programs() -> u32 {
    1024
}
fn default_max_links() -> u32 {
    4096
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            reconcile_interval_secs: default_reconcile_interval(),
            max_request_bytes: default_max_request(),
            max_bytecode_bytes: default_max_bytecode(),
            max_bytecode_bytes_in_flight: default_bytecode_in_flight(),
            file_open_timeout_secs: default_file_timeout(),
            max_programs: default_max_programs(),
            max_links: default_max_links(),
            programs_dir: default_programs_dir(),
        }
    }
}

/// `[images]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesConfig {
    /// The image cache (an OCI image layout). Survives reboots.
    #[serde(default = "default_cache_dir")]
    pub cache_dir: PathBuf,
    /// The largest image (config + compressed bytecode layer) accepted, in bytes; the
    /// bytecode may be at most 8 times this once decompressed.
    #[serde(default = "default_max_image_size")]
    pub max_image_size: u64,
    /// Registries (host[:port]) reached over plain HTTP. Loopback ones always are.
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    /// A docker-style config.json whose `auths` the daemon uses when a caller gives none.
    pub auth_file: Option<PathBuf>,
    #[serde(default)]
    pub signatures: SignatureConfig,
    /// How long one pull may take in all before it is abandoned. Default 300.
    #[serde(default = "default_pull_timeout")]
    pub pull_timeout_secs: u64,
    /// Pulls one caller (other than root) may have in progress at once. Default 2.
    #[serde(default = "default_pulls_per_uid")]
    pub max_pulls_per_uid: u32,
}

fn default_pull_timeout() -> u64 {
    300
}
fn default_pulls_per_uid() -> u32 {
    2
}

fn default_cache_dir() -> PathBuf {
    PathBuf::from("/var/lib/bpfman/images")
}
fn default_max_image_size() -> u64 {
    64 << 20
}

impl Default for ImagesConfig {
    fn default() -> Self {
        Self {
            cache_dir: default_cache_dir(),
            max_image_size: default_max_image_size(),
            insecure_registries: Vec::new(),
            auth_file: None,
            signatures: SignatureConfig::default(),
            pull_timeout_secs: default_pull_timeout(),
            max_pulls_per_uid: default_pulls_per_uid(),
        }
    }
}

/// `[images.signatures]`: which images must carry a cosign signature by which key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureConfig {
    /// Check signatures at all. Default true.
    #[serde(default = "yes")]
    pub verify: bool,
    /// Images that no trusted key covers may load unsigned. Default true.
    #[serde(default = "yes")]
    pub allow_unsigned: bool,
    /// Keys, each trusted for the images whose reference starts with its prefix; an
    /// image a key covers must be signed by one of the keys that cover it.
    #[serde(default)]
    pub trusted_keys: Vec<TrustedKey>,
}

fn yes() -> bool {
    true
}

impl Default for SignatureConfig {
    fn default() -> Self {
        Self {
            verify: true,
            allow_unsigned: true,
            trusted_keys: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKey {
    /// Image reference prefix, e.g. "quay.io/myorg/"; "" for every image.
    #[serde(default)]
    pub prefix: String,
    /// Path of a cosign public key (PEM).
    pub key: PathBuf,
}

/// `[api]`: the socket, and what callers may hold of the daemon. Root is never
/// counted against these limits and is always served.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Group that owns the socket (mode 0660). Default "bpfman"; when that group does
    /// not exist the socket stays root's only.
    pub socket_group: Option<String>,
    /// Connections open at once from all callers but root. Default 256.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections open at once from one uid (not root). Default 16.
    #[serde(default = "default_max_connections_per_uid")]
    pub max_connections_per_uid: usize,
    /// Requests in progress at once from all callers but root. Default 64.
    #[serde(default = "default_max_requests")]
    pub max_requests: usize,
    /// Requests in progress at once from one uid (not root). Default 8.
    #[serde(default = "default_max_requests_per_uid")]
    pub max_requests_per_uid: usize,
    /// HTTP/2 streams one connection may have open at once. Default 8.
    #[serde(default = "default_max_streams")]
    pub max_streams_per_connection: u32,
    /// A connection with no request in progress and no traffic for this long is
    /// closed (clients reconnect on their next call). Default 120.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// A connection that has not started a request this long after connecting is
    /// closed. Default 10.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_secs: u64,
}

fn default_max_connections() -> usize {
    256
}
fn default_max_connections_per_uid() -> usize {
    16
}
fn default_max_requests() -> usize {
    64
}
fn default_max_requests_per_uid() -> usize {
    8
}
fn default_max_streams() -> u32 {
    8
}
fn default_idle_timeout() -> u64 {
    120
}
fn default_handshake_timeout() -> u64 {
    10
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            socket_group: None,
            max_connections: default_max_connections(),
            max_connections_per_uid: default_max_connections_per_uid(),
            max_requests: default_max_requests(),
            max_requests_per_uid: default_max_requests_per_uid(),
            max_streams_per_connection: default_max_streams(),
            idle_timeout_secs: default_idle_timeout(),
            handshake_timeout_secs: default_handshake_timeout(),
        }
    }
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
        let mut c: Config = toml::from_str(text).map_err(|e| {
            let pos = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(" at line {line}")
                })
                .unwrap_or_default();
            Error::invalid(format!("config {origin}{pos}: {}", e.message()))
        })?;
        if let Some(sg) = c.signing.clone() {
            let own = toml::from_str::<SignatureKeys>(text)
                .ok()
                .and_then(|k| k.images)
                .and_then(|i| i.signatures)
                .unwrap_or_default();
            if let Some(v) = sg.verify_enabled
                && !own.contains_key("verify")
            {
                c.images.signatures.verify = v;
            }
            if let Some(v) = sg.allow_unsigned
                && !own.contains_key("allow_unsigned")
            {
                c.images.signatures.allow_unsigned = v;
            }
        }
        c.metrics
            .listen_addr()
            .map_err(|e| Error::invalid(format!("config {origin}: {}", e.message())))?;
        if let Some(s) = &c.metrics.socket
            && !s.is_absolute()
        {
            return Err(Error::invalid(format!(
                "config {origin}: [metrics] socket = '{}': use an absolute path",
                s.display()
            )));
        }
        crate::metrics::MetadataLabels::new(&c.metrics.metadata_labels)
            .map_err(|e| Error::invalid(format!("config {origin}: {e}")))?;
        for (iface, i) in &c.interfaces {
            if let Some(m) = &i.xdp_mode
                && !["drv", "skb", "hw"].contains(&m.as_str())
            {
                return Err(Error::invalid(format!(
                    "config {origin}: interfaces.{iface}.xdp_mode = '{m}': use drv, skb or hw"
                )));
            }
        }
        for (key, v) in [
            ("api.max_connections", c.api.max_connections as u64),
            (
                "api.max_connections_per_uid",
                c.api.max_connections_per_uid as u64,
            ),
            ("api.max_requests", c.api.max_requests as u64),
            (
                "api.max_requests_per_uid",
                c.api.max_requests_per_uid as u64,
            ),
            (
                "api.max_streams_per_connection",
                c.api.max_streams_per_connection as u64,
            ),
            ("api.handshake_timeout_secs", c.api.handshake_timeout_secs),
            ("api.idle_timeout_secs", c.api.idle_timeout_secs),
            (
                "daemon.max_request_bytes",
                c.daemon.max_request_bytes as u64,
            ),
            ("daemon.max_bytecode_bytes", c.daemon.max_bytecode_bytes),
            (
                "daemon.max_bytecode_bytes_in_flight",
                c.daemon.max_bytecode_bytes_in_flight,
            ),
            (
                "daemon.file_open_timeout_secs",
                c.daemon.file_open_timeout_secs,
            ),
            ("images.pull_timeout_secs", c.images.pull_timeout_secs),
            (
                "images.max_pulls_per_uid",
                c.images.max_pulls_per_uid as u64,
            ),
        ] {
            if v == 0 {
                return Err(Error::invalid(format!(
                    "config {origin}: {key} must be above 0"
                )));
            }
        }
        if c.daemon.max_bytecode_bytes_in_flight < c.daemon.max_bytecode_bytes {
            return Err(Error::invalid(format!(
                "config {origin}: daemon.max_bytecode_bytes_in_flight ({}) is below \
                 daemon.max_bytecode_bytes ({}): a file of the largest size could never load",
                c.daemon.max_bytecode_bytes_in_flight, c.daemon.max_bytecode_bytes
            )));
        }
        for r in &c.policy.rules {
            // Grants name real places: absolute, without '.' or '..', so a grant means
            // the directory the kernel walks to.
            let dirs = r
                .file_dirs
                .iter()
                .flatten()
                .map(|d| d.display().to_string());
            let targets = r.uprobe_targets.iter().flatten().cloned();
            let netns = r.netns.iter().flatten().cloned();
            for (key, v) in dirs
                .map(|d| ("file_dirs", d))
                .chain(targets.map(|t| ("uprobe_targets", t)))
                .chain(netns.map(|n| ("netns", n)))
            {
                crate::access::check_path(&v, key).map_err(|e| {
                    Error::invalid(format!("config {origin}: rule '{}': {e}", r.name))
                })?;
            }
            for t in r.program_types.iter().flatten() {
                if !crate::model::ProgramKind::ALL
                    .iter()
                    .any(|k| k.as_str() == t)
                {
                    return Err(Error::invalid(format!(
                        "config {origin}: rule '{}': program_types has '{t}', which is not a \
                         program type (use {})",
                        r.name,
                        crate::model::ProgramKind::names()
                    )));
                }
            }
        }
        if c.images.max_image_size == 0 {
            return Err(Error::invalid(format!(
                "config {origin}: images.max_image_size must be above 0"
            )));
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
    fn upstreams_default_configuration_starts_this_daemon() {
        // internal.DefaultConfiguration of upstream's operator.
        let text = "[database]\nmax_retries = 30\nmillisec_delay = 10000\n\n[signing]\nallow_unsigned = false\nverify_enabled = false\n";
        let c = Config::parse(text, "t").map_err(|e| e.to_string());
        let c = c.as_ref().map(|c| {
            (
                c.images.signatures.verify,
                c.images.signatures.allow_unsigned,
            )
        });
        assert_eq!(c, Ok((false, false)));
        // Where both say, [images.signatures] wins.
        let text = "[signing]\nverify_enabled = false\n[images.signatures]\nverify = true\n";
        let c = Config::parse(text, "t").map(|c| c.images.signatures.verify);
        assert_eq!(c.ok(), Some(true));
        // Typos there are still refused.
        assert!(Config::parse("[signing]\nverify = true\n", "t").is_err());
    }

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
