//! The bpfman gRPC API: `bpfman.v1` (wire-compatible with upstream bpfman) and the
//! `bpfman.ext.v1` extensions that sit beside it.

/// Upstream-compatible service: Load, Unload, Attach, Detach, List, PullBytecode, Get.
pub mod v1 {
    #![allow(clippy::all)]
    tonic::include_proto!("bpfman.v1");
}

/// bpfman's own extensions: links, ownership, kernel features, daemon info.
pub mod ext {
    #![allow(clippy::all)]
    tonic::include_proto!("bpfman.ext.v1");
}

/// Default path of the daemon's unix socket (upstream's default).
pub const DEFAULT_SOCKET: &str = "/run/bpfman-sock/bpfman.sock";
