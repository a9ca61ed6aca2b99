//! Metadata keys bpfman itself writes. Keys under [`RESERVED_PREFIX`] are the daemon's:
//! a tenant may not set them (policy grants them explicitly), so a reader can trust them.

/// The prefix of every key bpfman reserves.
pub const RESERVED_PREFIX: &str = "bpfman.io/";
/// The load request's `uuid` field, kept on each program it loaded (upstream's key).
pub const UUID: &str = "bpfman.io/uuid";
/// On a uprobe link: the file the daemon really probed (`dev:inode`).
pub const PROBED: &str = "bpfman.io/probed";
/// On a program declared in a static file: `FILE/NAME` of its declaration.
pub const STATIC: &str = "bpfman.io/static";
/// On a declared program: a hash of its declaration (a changed one is re-applied).
pub const STATIC_DIGEST: &str = "bpfman.io/static-digest";

/// Whether `key` is one bpfman reserves.
pub fn is_reserved(key: &str) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

/// The gRPC request header with which root (the Kubernetes agent) asks the daemon to act on
/// behalf of a tenant: `kubernetes-namespace/NAME` (an extension beside `bpfman.v1`; a
/// request without it is the connection's own caller's).
pub const ON_BEHALF_OF_HEADER: &str = "bpfman-on-behalf-of";
