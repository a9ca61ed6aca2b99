//! bpfman: the library behind the daemon. `model` is plain data (its vocabulary is the
//! `bpfman-types` crate), `store` the only SQL, `kernel` the only aya, `bpffs` the only
//! owner of the pin layout, `image` the only registry client, `manager` the rules that
//! tie them together. `store`, `kernel` and `bpffs` are private: everything reaches them
//! through the manager, which authorizes every call.

pub mod access;
mod bpffs;
pub mod config;
pub mod dispatcher;
pub mod error;
pub mod fault;
pub mod fuzzing;
pub mod image;
mod kernel;
pub mod manager;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod request;
pub mod statics;
mod store;

pub use error::{Error, ErrorKind, Result};
pub use kernel::KernelProgram;
pub use kernel::probe::Features;

/// Read-only questions to the kernel about its objects, for tests, benchmarks and
/// observers (metrics): does an id exist, what runs on a TCX hook. Nothing here changes
/// kernel state.
pub mod inspect {
    pub use crate::kernel::ids::{Object, opens, wait_gone};
    pub use crate::kernel::tcx_programs;
}
