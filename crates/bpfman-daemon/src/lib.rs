//! The bpfman daemon: what `bpfman daemon` runs. `startup` prepares the host (bpffs,
//! tracefs, the runtime directory, the socket) and opens the manager; `admission` is the
//! socket's gatekeeper (connection and request limits, the caller's credentials);
//! `server` translates `bpfman.v1` and `bpfman.ext.v1` onto the manager and nothing more.

mod admission;
mod metrics;
mod server;
mod startup;

use std::path::PathBuf;

pub use startup::run;

/// How the daemon was asked to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Configuration file (TOML); the default path may be absent, any other must exist.
    pub config: PathBuf,
    /// Runtime directory: store in db/, bpffs at fs/.
    pub runtime_dir: PathBuf,
    /// The unix socket to serve the API on.
    pub socket: PathBuf,
}

/// The configuration file used when none is named.
pub const DEFAULT_CONFIG: &str = "/etc/bpfman/bpfman.toml";
