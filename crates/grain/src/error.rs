//! Errors a caller can act on.

use std::time::Duration;

use crate::grain::{Code, GrainError};
use crate::identity::MemberId;

/// Why a grain call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The call did not complete within its deadline (or an attempt within its
    /// per-attempt timeout). It may or may not have run.
    #[error("call to {target} timed out after {after:?}")]
    Timeout {
        /// `kind/identity` and method.
        target: String,
        /// How long the caller waited.
        after: Duration,
    },
    /// No live member hosts the grain's kind.
    #[error("no member of the cluster hosts kind {kind}")]
    NoMemberHostsKind {
        /// The kind.
        kind: String,
    },
    /// The owning member could not be reached, refused the connection, or left while
    /// the call was in flight. `maybe_ran` says whether the request may have reached
    /// the grain.
    #[error("member {member} unavailable: {reason}")]
    MemberUnavailable {
        /// The member.
        member: MemberId,
        /// What happened.
        reason: String,
        /// True when the request was written to the member and may have run.
        maybe_ran: bool,
    },
    /// The member that received the call does not own the identity under its current
    /// topology (membership was changing). Retried automatically.
    #[error("member {member} does not own {target} under its current topology")]
    WrongOwner {
        /// The member that refused.
        member: MemberId,
        /// `kind/identity`.
        target: String,
    },
    /// The member is shutting down and did not accept the call. Retried automatically.
    #[error("member {member} is shutting down")]
    ShuttingDown {
        /// The member.
        member: MemberId,
    },
    /// The grain answered with an error.
    #[error("grain error {code:?}: {message}")]
    Application {
        /// The gRPC-style status code.
        code: Code,
        /// The grain's message.
        message: String,
    },
    /// A request or response could not be encoded or decoded, or is too large.
    #[error("codec error: {0}")]
    Codec(String),
}

impl CallError {
    /// True when the request provably did not run, so trying again cannot run it twice.
    pub fn provably_not_run(&self) -> bool {
        match self {
            CallError::NoMemberHostsKind { .. }
            | CallError::WrongOwner { .. }
            | CallError::ShuttingDown { .. } => true,
            CallError::MemberUnavailable { maybe_ran, .. } => !maybe_ran,
            CallError::Timeout { .. } | CallError::Application { .. } | CallError::Codec(_) => {
                false
            }
        }
    }

    /// The gRPC status code closest to this error.
    pub fn code(&self) -> Code {
        match self {
            CallError::Timeout { .. } => Code::DeadlineExceeded,
            CallError::NoMemberHostsKind { .. } => Code::Unavailable,
            CallError::MemberUnavailable { .. } => Code::Unavailable,
            CallError::WrongOwner { .. } => Code::Unavailable,
            CallError::ShuttingDown { .. } => Code::Unavailable,
            CallError::Application { code, .. } => *code,
            CallError::Codec(_) => Code::Internal,
        }
    }

    /// This error naming `target` (`kind/identity method`) where it names a call and
    /// does not yet: the links between members leave it to the caller, which alone
    /// needs it formatted, and only when a call fails.
    pub(crate) fn with_target(mut self, target: impl FnOnce() -> String) -> Self {
        if let CallError::Timeout { target: t, .. } | CallError::WrongOwner { target: t, .. } =
            &mut self
            && t.is_empty()
        {
            *t = target();
        }
        self
    }
}

impl From<GrainError> for CallError {
    fn from(e: GrainError) -> Self {
        CallError::Application {
            code: e.code,
            message: e.message,
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid; the message names the setting.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The gRPC listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The message of a panic payload (`&str` or `String`), for the caller and the log.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
