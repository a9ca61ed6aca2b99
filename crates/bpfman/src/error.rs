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
    /// A concurrent change got in the way (the hook changed between reading its order
    /// and attaching): the same request is safe to send again.
    Conflict,
}

/// A bpfman error: a kind, a message written for the person who has to act on it, and,
/// for failed system calls, the operation and the errno (kept as values, not only text,
/// so that the kind is chosen from the errno and a caller can branch on it).
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    op: Option<String>,
    errno: Option<i32>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            op: None,
            errno: None,
        }
    }

    /// A failed system call or file operation: `op` says what was being attempted (e.g.
    /// "removing /run/bpfman/fs/links/7"); the kind follows the errno.
    pub fn io(op: impl Into<String>, e: std::io::Error) -> Self {
        let op = op.into();
        let errno = e.raw_os_error();
        let kind = errno.map_or(ErrorKind::Internal, kind_of_errno);
        Self {
            kind,
            message: format!("{op}: {e}"),
            op: Some(op),
            errno,
        }
    }

    /// Like [`Error::io`] for a kernel (bpf, netlink) call: an errno without a more
    /// specific meaning is a kernel failure, not the daemon's own.
    pub fn syscall(op: impl Into<String>, e: std::io::Error) -> Self {
        let mut err = Self::io(op, e);
        // Busy or interrupted: the kernel's failure (retryable only when interrupted or
        // told to try again, see `is_transient`).
        if err.kind == ErrorKind::Internal
            || matches!(err.errno, Some(libc::EBUSY | libc::EAGAIN | libc::EINTR))
        {
            err.kind = ErrorKind::Kernel;
        }
        err
    }

    /// A concurrent change got in the way; retrying the same request is safe.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    /// Records the operation and errno of the system call behind this error.
    pub fn with_errno(mut self, op: impl Into<String>, errno: Option<i32>) -> Self {
        self.op = Some(op.into());
        self.errno = errno;
        self
    }

    /// A failed operation on the daemon's own files (bpffs, the store's directory): the
    /// daemon's failure whatever the errno (kept), never the caller's.
    pub fn daemon_io(op: impl Into<String>, e: std::io::Error) -> Self {
        let mut err = Self::io(op, e);
        if err.kind != ErrorKind::ResourceExhausted {
            err.kind = ErrorKind::Internal;
        }
        err
    }

    /// What was being attempted, when a system call failed.
    pub fn op(&self) -> Option<&str> {
        self.op.as_deref()
    }

    /// The errno of the failed system call, if one failed.
    pub fn errno(&self) -> Option<i32> {
        self.errno
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
            message: format!("{what}: {}", self.message),
            ..self
        }
    }

    /// Whether the same request may succeed later without change (a limit, a conflict
    /// with a concurrent change, a resource the kernel lacked for now).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::ResourceExhausted | ErrorKind::Conflict
        ) || matches!(self.errno, Some(libc::EAGAIN | libc::EINTR))
    }
}

/// The kind an errno means, whatever the call.
fn kind_of_errno(errno: i32) -> ErrorKind {
    match errno {
        libc::ENOENT | libc::ENODEV | libc::ESRCH | libc::ENXIO => ErrorKind::NotFound,
        libc::EEXIST => ErrorKind::AlreadyExists,
        libc::EPERM | libc::EACCES => ErrorKind::PermissionDenied,
        libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOSPC | libc::E2BIG => {
            ErrorKind::ResourceExhausted
        }
        libc::EOPNOTSUPP | libc::ENOSYS => ErrorKind::Unsupported,
        libc::EBUSY => ErrorKind::FailedPrecondition,
        _ => ErrorKind::Internal,
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<bpfman_types::Invalid> for Error {
    fn from(e: bpfman_types::Invalid) -> Self {
        Error::invalid(e.0)
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::internal(format!("store: {e}"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_errno() {
        let e = |n| Error::io("x", std::io::Error::from_raw_os_error(n));
        assert_eq!(e(libc::ENOENT).kind(), ErrorKind::NotFound);
        assert_eq!(e(libc::EMFILE).kind(), ErrorKind::ResourceExhausted);
        assert_eq!(e(libc::EACCES).kind(), ErrorKind::PermissionDenied);
        assert_eq!(e(libc::EIO).kind(), ErrorKind::Internal);
        let k = Error::syscall(
            "bpf_link_create",
            std::io::Error::from_raw_os_error(libc::EINVAL),
        );
        assert_eq!(k.kind(), ErrorKind::Kernel);
        assert_eq!(k.errno(), Some(libc::EINVAL));
        assert_eq!(k.op(), Some("bpf_link_create"));
        assert!(k.message().starts_with("bpf_link_create: "));
        let b = Error::syscall(
            "bpf_link_create",
            std::io::Error::from_raw_os_error(libc::EBUSY),
        );
        assert!(!b.is_transient(), "EBUSY is mostly a lasting refusal");
        assert_eq!(b.kind(), ErrorKind::Kernel);
        let a = Error::syscall("x", std::io::Error::from_raw_os_error(libc::EAGAIN));
        assert!(a.is_transient());
        let d = Error::daemon_io(
            "removing x",
            std::io::Error::from_raw_os_error(libc::EACCES),
        );
        assert_eq!(d.kind(), ErrorKind::Internal);
        assert_eq!(d.errno(), Some(libc::EACCES));
        // Context keeps the structure.
        let c = b.context("attaching");
        assert_eq!(c.errno(), Some(libc::EBUSY));
    }
}
