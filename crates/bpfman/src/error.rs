//! Errors of the bpfman library. Each carries what was being attempted and, for kernel
//! failures, the kernel's own error; each maps onto one [`ErrorKind`] that the API layer
//! turns into a status code.

use std::fmt;

/// What sort of failure: decides the gRPC status code and the CLI exit message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or names something that cannot be used as asked.
    InvalidArgument,
    /// A program, link, file or interface does not exist.
    NotFound,
    /// The thing already exists (a duplicate attach, for example).
    AlreadyExists,
    /// The request is well formed but the current state forbids it.
    FailedPrecondition,
    /// The running kernel lacks a feature the request needs.
    Unsupported,
    /// The caller is not allowed to do this.
    PermissionDenied,
    /// The kernel refused or failed (verifier, attach, pin).
    Kernel,
    /// The daemon's own state (store, bpffs) failed.
    Internal,
    /// A limit on what one caller (or all callers) may have in flight was reached; the
    /// same request may succeed later.
    ResourceExhausted,
    /// The caller gave up (cancelled, timed out, or went away) before the work started.
    Cancelled,
}

/// A bpfman error: a kind plus a message written for the person who has to act on it.
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn exists(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, message)
    }
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::FailedPrecondition, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }
    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PermissionDenied, message)
    }
    pub fn kernel(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Kernel, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    pub fn exhausted(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ResourceExhausted, message)
    }
    pub fn cancelled(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Cancelled, message)
    }
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    pub fn message(&self) -> &str {
        &self.message
    }
    /// Prefixes the message with what was being attempted.
    pub fn context(self, what: impl fmt::Display) -> Self {
        Self {
            kind: self.kind,
            message: format!("{what}: {}", self.message),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::internal(format!("store: {e}"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
