//! The transport between members: one long-lived bidirectional gRPC stream per ordered
//! pair of members (`grain.v1.Remote/Open`), carrying batches of requests one way and
//! batches of responses the other.
//!
//! The transport knows envelopes, members and streams; it knows nothing of activations
//! (the server hands each request to a [`Dispatch`] and writes back what it answers).
//!
//! **Handshake.** The caller sends its cluster name, member id and address as request
//! metadata (`grain-cluster`, `grain-member-id`, `grain-address`); the callee refuses a
//! caller of another cluster with `FAILED_PRECONDITION` naming both clusters, and
//! answers its own cluster and member id in the response metadata, which the caller
//! checks (an address now used by another member, or by another cluster, is refused).
//!
//! **Batching.** A writer drains whatever is queued (up to a count and a byte budget)
//! into one message; there is no timer, so an idle link adds no latency.
//!
//! **Bounds.** Outbound queues are bounded in calls and in payload bytes (a full queue
//! makes callers wait, within their deadline); the callee bounds the calls in flight
//! per stream, the payload bytes in flight per peer and the streams per peer (reading
//! no more of a stream while it is over, so HTTP/2 flow control holds the peer back);
//! messages are capped in size at both ends.

mod budget;
mod client;
mod connect;
#[cfg(test)]
mod limits_tests;
mod links;
mod server;

pub(crate) use client::LinkConfig;
pub(crate) use connect::{Dialer, OpenError, open as open_stream};
pub(crate) use links::Links;
pub(crate) use server::{Dispatch, Leave, RemoteService, ResponseSink, Server, ServerLimits};

use std::time::Duration;

use bytes::Bytes;

use crate::config::MAX_ENVELOPE_META_BYTES;
use crate::error::CallError;
use crate::grain::Code;
use crate::identity::MemberId;

/// Generated protobuf and gRPC types of `proto/grain/v1/remote.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub(crate) mod pb {
    tonic::include_proto!("grain.v1");
}

pub(crate) const HDR_CLUSTER: &str = "grain-cluster";
pub(crate) const HDR_MEMBER_ID: &str = "grain-member-id";
pub(crate) const HDR_ADDRESS: &str = "grain-address";
pub(crate) const HDR_PROTOCOL: &str = "grain-protocol";

/// The version of this protocol a member speaks: 2 adds `ResponseBatch.leaving`.
/// Members before versioning send no `grain-protocol` header and count as 1.
pub(crate) const PROTOCOL_VERSION: u32 = 2;
/// The oldest version this member talks to.
pub(crate) const MIN_PROTOCOL_VERSION: u32 = 1;

/// Checks a peer's `grain-protocol` header (`None`: a member before versioning, 1).
/// `Err` says what is wrong, naming both versions.
pub(crate) fn check_protocol(
    header: Option<Result<&str, tonic::metadata::errors::ToStrError>>,
    who: &str,
) -> Result<u32, String> {
    let version = match header {
        None => 1,
        Some(v) => v
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok())
            .ok_or_else(|| format!("the {who} sent an unreadable {HDR_PROTOCOL} header"))?,
    };
    if (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
        Ok(version)
    } else {
        Err(format!(
            "the {who} speaks protocol version {version}, this member speaks \
             {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}: upgrade the older members"
        ))
    }
}

/// A failure message cut to [`MAX_ENVELOPE_META_BYTES`] (at a character boundary).
fn bounded_message(mut message: String) -> String {
    const MARK: &str = " … (truncated)";
    if message.len() > MAX_ENVELOPE_META_BYTES {
        let mut cut = MAX_ENVELOPE_META_BYTES - MARK.len();
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str(MARK);
    }
    message
}

/// Builds the wire response for a call's outcome.
pub(crate) fn response(correlation_id: u64, result: Result<Bytes, CallError>) -> pb::Response {
    use pb::failure::Reason;
    let result = match result {
        Ok(payload) => pb::response::Result::Payload(payload),
        Err(e) => {
            let (reason, code, message) = match &e {
                CallError::Application { code, message } => {
                    (Reason::Application, *code as i32, message.clone())
                }
                CallError::WrongOwner { .. } => (Reason::WrongOwner, 0, e.to_string()),
                CallError::ShuttingDown { .. } => (Reason::ShuttingDown, 0, e.to_string()),
                CallError::Timeout { .. } => (Reason::Timeout, 0, e.to_string()),
                other => (Reason::Application, other.code() as i32, other.to_string()),
            };
            pb::response::Result::Failure(pb::Failure {
                reason: reason as i32,
                code,
                message: bounded_message(message),
            })
        }
    };
    pb::Response {
        correlation_id,
        result: Some(result),
    }
}

/// Turns a wire response from `member` into a call outcome. Its errors name no target
/// ([`CallError::with_target`] adds it).
pub(crate) fn outcome(
    member: &MemberId,
    started: tokio::time::Instant,
    result: Option<pb::response::Result>,
) -> Result<Bytes, CallError> {
    use pb::failure::Reason;
    match result {
        Some(pb::response::Result::Payload(p)) => Ok(p),
        Some(pb::response::Result::Failure(f)) => Err(match Reason::try_from(f.reason) {
            Ok(Reason::WrongOwner) => CallError::WrongOwner {
                member: member.clone(),
                target: String::new(),
            },
            Ok(Reason::ShuttingDown) => CallError::ShuttingDown {
                member: member.clone(),
            },
            Ok(Reason::Timeout) => CallError::Timeout {
                target: String::new(),
                after: started.elapsed(),
            },
            Ok(Reason::UnknownKind) => CallError::Application {
                code: Code::Unimplemented,
                message: f.message,
            },
            Ok(Reason::Application) | Err(_) => CallError::Application {
                code: Code::from_i32(f.code),
                message: f.message,
            },
        }),
        None => Err(CallError::Codec(format!(
            "member {member} sent a response with neither payload nor failure"
        ))),
    }
}

/// Timeout left from `now` until `deadline`, in microseconds for the wire (at least 1).
pub(crate) fn micros_between(now: tokio::time::Instant, deadline: tokio::time::Instant) -> u64 {
    let left = deadline.saturating_duration_since(now);
    (left.as_micros().min(u64::MAX as u128) as u64).max(1)
}

/// A deadline from a wire timeout; 0 means "none", capped at one hour.
pub(crate) fn deadline_from_micros(micros: u64) -> tokio::time::Instant {
    let cap = Duration::from_secs(3600);
    let d = if micros == 0 {
        cap
    } else {
        Duration::from_micros(micros).min(cap)
    };
    tokio::time::Instant::now() + d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_of_supported_protocol_versions_talk_and_others_are_told_why_not() {
        assert_eq!(check_protocol(None, "caller"), Ok(1), "before versioning");
        assert_eq!(check_protocol(Some(Ok("2")), "caller"), Ok(2));
        let newer = check_protocol(Some(Ok("99")), "caller");
        let msg = newer.err().unwrap_or_default();
        assert!(
            msg.contains("protocol version 99") && msg.contains("1 to 2"),
            "{msg}"
        );
        assert!(check_protocol(Some(Ok("zero")), "callee").is_err());
        assert!(check_protocol(Some(Ok("0")), "callee").is_err());
    }
}
