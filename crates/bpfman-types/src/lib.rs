//! bpfman's vocabulary, shared by the daemon, the client library, the CLI and the coming
//! Kubernetes agent: what a program kind is, how an attachment is described, which return
//! codes continue a dispatcher chain, how images are pulled, which metadata keys bpfman
//! reserves, and how each of these is written on the `bpfman.v1` wire.
//!
//! Plain data and pure functions only: no aya, no SQLite, no async runtime. Every table
//! here is the only copy of itself in the tree.

mod attach;
mod bytecode;
mod feature;
mod kind;
pub mod metadata;
pub mod proto;

pub use attach::{AttachSpec, Direction, NetHook, ProceedOn, TC_PROCEED_ON, XDP_PROCEED_ON};
pub use bytecode::{Bytecode, ProgramSpec, PullPolicy};
pub use feature::KernelFeature;
pub use kind::{KernelProgType, ProgramKind};

/// A value that is not part of the vocabulary, with a message that names it and what to
/// use instead. The daemon turns it into an invalid-argument error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}
