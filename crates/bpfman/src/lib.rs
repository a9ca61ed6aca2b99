//! bpfman: the library behind the daemon. `model` is plain data, `store` the only SQL,
//! `kernel` the only aya, `manager` the rules that tie them together.

pub mod access;
pub mod config;
pub mod dispatcher;
pub mod error;
pub mod fault;
pub mod fuzzing;
pub mod image;
pub mod kernel;
pub mod manager;
pub mod model;
pub mod policy;
pub mod request;
pub mod statics;
pub mod store;

pub use error::{Error, ErrorKind, Result};
