//! What can go wrong in an operation, in the control plane's terms. The API maps each variant
//! to one status and code (`cerver-api/src/error.rs`); runtime errors are translated here, so
//! that nothing above the control plane sees the runtime.

use cerver_runtime::RuntimeError;

pub use cerver_runtime::FileErrorKind;

use crate::accounts::Usage;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request is malformed or out of range.
    #[error("{0}")]
    BadRequest(String),
    /// A request field does not parse (e.g. a timeout that is not a positive number, an
    /// unknown encoding); `code` names what was invalid (`invalid_request`, `invalid_pid`).
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// A path outside the workspace, or not a valid path.
    #[error("{0}")]
    BadPath(String),
    /// A file operation failed inside the sandbox.
    #[error("{message}")]
    File {
        kind: FileErrorKind,
        message: String,
    },
    /// No such sandbox (or not the caller's).
    #[error("sandbox not found")]
    NotFound,
    /// The sandbox ended while the operation was under way.
    #[error("the sandbox is no longer running")]
    Gone,
    /// The sandbox has no background process with this pid.
    #[error("no background process with pid {0} in this sandbox")]
    ProcessNotFound(i32),
    /// The sandbox has no context with this id.
    #[error("no context {0:?} in this sandbox")]
    ContextNotFound(String),
    /// The caller has no (unrevoked) API key with this id.
    #[error("no such API key")]
    KeyNotFound,
    /// A limit was hit.
    #[error("{0}")]
    Limit(String),
    /// Too many operations of this kind are under way (in the sandbox or on the server):
    /// retrying in a moment works.
    #[error("{0}")]
    Busy(String),
    /// No or an invalid API key.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller's plan does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// The caller's daily request budget is spent.
    #[error("{message}")]
    RateLimited { message: String, usage: Usage },
    /// A dependency (e.g. mail delivery) is not available right now.
    #[error("{0}")]
    Unavailable(String),
    /// A process could not be started for a reason that is neither the caller's doing nor a
    /// limit: retrying later may work.
    #[error("{0}")]
    CannotStart(String),
    /// No sandbox could be created right now (the cause is logged, not shown).
    #[error("could not create a sandbox right now; retry shortly")]
    SandboxUnavailable,
    /// This host cannot run the requested engine.
    #[error("{0}")]
    EngineUnavailable(String),
    /// The request conflicts with the sandbox's state (e.g. its workspace cannot be carried
    /// over in an upgrade).
    #[error("{0}")]
    Conflict(String),
    /// The server's disk budget for sandboxes is spent (`--max-disk-mb`, or less than 10% of
    /// its disk free): no new sandbox until some are deleted.
    #[error("{0}")]
    DiskFull(String),
    /// Something unexpected (logged with detail, shown bare).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ControlError {
    /// A field that does not parse: `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        ControlError::Invalid {
            code: "invalid_request",
            message: message.into(),
        }
    }
}

impl From<RuntimeError> for ControlError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::BadPath(m) => ControlError::BadPath(m),
            RuntimeError::File { kind, message } => ControlError::File { kind, message },
            RuntimeError::Gone => ControlError::Gone,
            e @ RuntimeError::ContextDead => ControlError::Conflict(e.to_string()),
            e @ RuntimeError::ProcessLimit(_) => ControlError::Limit(e.to_string()),
            e @ RuntimeError::CannotStart(_) => ControlError::CannotStart(e.to_string()),
            RuntimeError::Create(m) => {
                tracing::error!("sandbox creation failed: {m}");
                ControlError::SandboxUnavailable
            }
            RuntimeError::Unavailable(m) => ControlError::EngineUnavailable(m),
            RuntimeError::DiskFull(m) => ControlError::DiskFull(m),
            RuntimeError::Unsupported(m) | RuntimeError::Internal(m) => ControlError::Internal(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_process_limit_is_a_limit() {
        let e = ControlError::from(RuntimeError::ProcessLimit(
            "[Errno 11] Resource temporarily unavailable".into(),
        ));
        assert!(
            matches!(&e, ControlError::Limit(m) if m.contains("process limit")),
            "{e:?}"
        );
        for cause in [
            "the process did not start in time",
            "could not start a run process",
        ] {
            let e = ControlError::from(RuntimeError::CannotStart(cause.into()));
            assert!(
                matches!(&e, ControlError::CannotStart(m) if m.contains(cause)),
                "{e:?}"
            );
        }
    }

    #[test]
    fn creation_failures_hide_their_cause() {
        let e = ControlError::from(RuntimeError::Create("clone: EPERM at /secret".into()));
        assert!(matches!(e, ControlError::SandboxUnavailable));
        assert!(!e.to_string().contains("secret"));
    }
}
