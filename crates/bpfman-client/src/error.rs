//! What a failed call tells its caller: the gRPC code, the daemon's message, and whether
//! the same request may be sent again. The daemon chooses codes for a controller's retry
//! loop (docs/api.md "Status codes"); [`Error::retry`] reads them back.

use std::path::Path;

use tonic::Code;

/// Whether a failed request may be retried as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Transient (a limit, a conflict with a concurrent change, the daemon restarting):
    /// the same request may succeed later; back off and send it again.
    Later,
    /// The request itself is wrong, not allowed, or names what does not exist: retrying it
    /// unchanged fails the same way.
    AfterChange,
    /// The outcome is unknown (the daemon failed internally or the connection dropped
    /// mid-call): read the state (list/get) before deciding.
    CheckState,
}

#[derive(Debug, Clone)]
pub struct Error {
    code: Code,
    message: String,
    transport: bool,
}

impl Error {
    pub(crate) fn connect(socket: &Path, hint: String) -> Self {
        Self {
            code: Code::Unavailable,
            message: format!(
                "cannot connect to the daemon at {}: {hint}",
                socket.display()
            ),
            transport: true,
        }
    }

    pub(crate) fn protocol(message: &str) -> Self {
        Self {
            code: Code::Internal,
            message: message.to_string(),
            transport: false,
        }
    }

    pub(crate) fn invalid(message: String) -> Self {
        Self {
            code: Code::InvalidArgument,
            message,
            transport: false,
        }
    }

    /// The gRPC code the daemon (or the transport) returned.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The daemon's message, or what happened to the connection.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the daemon was not reached or the connection failed (as opposed to the
    /// daemon answering with an error).
    pub fn is_transport(&self) -> bool {
        self.transport
    }

    pub fn is_not_found(&self) -> bool {
        self.code == Code::NotFound
    }

    /// What a controller should do about this error.
    pub fn retry(&self) -> Retry {
        match self.code {
            Code::Unavailable | Code::ResourceExhausted | Code::Aborted => Retry::Later,
            Code::Internal | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled => {
                Retry::CheckState
            }
            _ => Retry::AfterChange,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<tonic::Status> for Error {
    /// A status without a message (the connection dropped, the daemon died, a transport
    /// error) still says what happened: its code and the underlying error, never an empty
    /// line.
    fn from(s: tonic::Status) -> Self {
        use std::error::Error as _;
        // The daemon's own UNAVAILABLE (a busy kernel) carries its message and no source;
        // a dropped connection or a dead daemon carries the transport's error.
        let transport = s.code() == Code::Unknown
            || (s.code() == Code::Unavailable && (s.message().is_empty() || s.source().is_some()));
        if !s.message().is_empty() && !transport {
            return Self {
                code: s.code(),
                message: s.message().to_string(),
                transport,
            };
        }
        let mut why = if s.message().is_empty() {
            format!(
                "the call failed with gRPC status {:?} and no message",
                s.code()
            )
        } else {
            s.message().to_string()
        };
        let mut src = s.source();
        while let Some(e) = src {
            let text = e.to_string();
            if !why.contains(&text) {
                why = format!("{why}: {text}");
            }
            src = e.source();
        }
        if transport {
            why.push_str(
                " (the daemon stopped or closed the connection; it refuses connections over \
                 [api] max_connections_per_uid or max_connections and closes idle ones: see its log)",
            );
        }
        Self {
            code: s.code(),
            message: why,
            transport,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_follows_the_code() {
        let e = |c| Error::from(tonic::Status::new(c, "x"));
        assert_eq!(e(Code::ResourceExhausted).retry(), Retry::Later);
        assert_eq!(e(Code::Aborted).retry(), Retry::Later);
        assert_eq!(e(Code::Unavailable).retry(), Retry::Later);
        assert_eq!(e(Code::InvalidArgument).retry(), Retry::AfterChange);
        assert_eq!(e(Code::FailedPrecondition).retry(), Retry::AfterChange);
        assert_eq!(e(Code::PermissionDenied).retry(), Retry::AfterChange);
        assert_eq!(e(Code::NotFound).retry(), Retry::AfterChange);
        assert_eq!(e(Code::Internal).retry(), Retry::CheckState);
    }

    #[test]
    fn empty_status_still_says_what_happened() {
        let e = Error::from(tonic::Status::new(Code::Unknown, ""));
        assert!(e.message().contains("no message"), "{}", e.message());
        assert!(e.is_transport());
    }
}
