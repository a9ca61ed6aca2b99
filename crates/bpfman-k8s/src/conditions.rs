//! Owns the condition vocabulary: the one condition a State carries (written by the agent) and
//! the one an application carries (written by the operator), with types and reasons as upstream
//! names them, except where upstream's cannot be stored: its "Unload Error" reason (a space) and
//! the empty condition it writes for ProgramListChangedError are refused by the API server, so
//! here every reason matches the Condition pattern and every condition has a message.

pub use crate::v1alpha1::{Condition, now_rfc3339};

/// The condition on a per-node State.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StateCondition {
    /// Not yet converged.
    Pending,
    /// Everything loaded and attached as the spec says.
    Success,
    /// Something failed; the message says what and what to do.
    Error,
    /// Taking the programs down failed.
    UnloadError,
    /// The programs are down (the application is being deleted or no longer selects the node).
    Unloaded,
    /// The node is not selected by the application's nodeSelector.
    NotSelected,
    /// The program list changed in a way that needs a reload that failed.
    ProgramListChangedError,
}

impl StateCondition {
    /// Every State condition.
    pub const ALL: [StateCondition; 7] = [
        Self::Pending,
        Self::Success,
        Self::Error,
        Self::UnloadError,
        Self::Unloaded,
        Self::NotSelected,
        Self::ProgramListChangedError,
    ];

    /// The condition type (upstream's spelling).
    pub fn type_(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Success => "Success",
            Self::Error => "Error",
            Self::UnloadError => "UnloadError",
            Self::Unloaded => "Unloaded",
            Self::NotSelected => "NotSelected",
            Self::ProgramListChangedError => "ProgramListChangedError",
        }
    }

    /// The reason: upstream's where it is valid ("Not yet complete" → `NotYetComplete`,
    /// "Unload Error" → `UnloadError`), the type otherwise.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Pending => "NotYetComplete",
            other => other.type_(),
        }
    }

    /// A default message, for when there is nothing more specific to say.
    pub fn default_message(self) -> &'static str {
        match self {
            Self::Pending => {
                "Not yet complete: the node has not converged on the application's spec"
            }
            Self::Success => "The BPF application has been successfully loaded and attached",
            Self::Error => "An error occurred loading or attaching the application on this node",
            Self::UnloadError => "An error occurred unloading the application on this node",
            Self::Unloaded => "The application's programs are unloaded from this node",
            Self::NotSelected => "This node is not selected by the application's nodeSelector",
            Self::ProgramListChangedError => {
                "The application's program list changed and reloading it failed"
            }
        }
    }

    /// The condition, with `message` (or the default) and the given transition time.
    pub fn condition(self, message: Option<&str>, now: &str, generation: Option<i64>) -> Condition {
        condition(
            self.type_(),
            self.reason(),
            message.unwrap_or(self.default_message()),
            now,
            generation,
        )
    }
}

/// The condition on an application, rolled up from its States.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AppCondition {
    /// Some selected node has not reported or not converged.
    Pending,
    /// Every selected node succeeded.
    Success,
    /// Some node failed.
    Error,
    /// Deletion is stuck on some node.
    DeleteError,
}

impl AppCondition {
    /// Every application condition.
    pub const ALL: [AppCondition; 4] =
        [Self::Pending, Self::Success, Self::Error, Self::DeleteError];

    /// The condition type; the reason is the same (upstream's).
    pub fn type_(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Success => "Success",
            Self::Error => "Error",
            Self::DeleteError => "DeleteError",
        }
    }

    /// Upstream's default messages.
    pub fn default_message(self) -> &'static str {
        match self {
            Self::Pending => "Waiting for Bpf Application Object to be reconciled on all nodes",
            Self::Success => "BPF application configuration successfully applied on all nodes",
            Self::Error => "An error has occurred on one or more nodes",
            Self::DeleteError => "Deletion failed on one or more nodes",
        }
    }

    /// The condition, with `message` (or the default).
    pub fn condition(self, message: Option<&str>, now: &str, generation: Option<i64>) -> Condition {
        condition(
            self.type_(),
            self.type_(),
            message.unwrap_or(self.default_message()),
            now,
            generation,
        )
    }
}

fn condition(
    type_: &str,
    reason: &str,
    message: &str,
    now: &str,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: "True".to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        last_transition_time: now.to_string(),
        observed_generation: generation,
    }
}

/// Whether `reason` is one the API server stores (`^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`,
/// 1..=1024 characters).
pub fn valid_reason(reason: &str) -> bool {
    let b = reason.as_bytes();
    if b.is_empty() || b.len() > 1024 || !b[0].is_ascii_alphabetic() {
        return false;
    }
    let mid_ok = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b',' || c == b':';
    let last = b[b.len() - 1];
    b.iter().all(|&c| mid_ok(c)) && (b.len() == 1 || last.is_ascii_alphanumeric() || last == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_one_the_api_server_stores() {
        for c in StateCondition::ALL {
            assert!(valid_reason(c.reason()), "{c:?}: {}", c.reason());
            assert!(!c.default_message().is_empty());
        }
        for c in AppCondition::ALL {
            assert!(valid_reason(c.type_()), "{c:?}");
        }
        assert!(
            !valid_reason("Unload Error"),
            "upstream's reason has a space"
        );
        assert!(!valid_reason(""));
        assert!(!valid_reason("Trailing,"));
        assert!(valid_reason("A"));
    }
}
