//! One call on its way to an activation, and the [`Reply`] contract its answer goes
//! through. The catalog names no transport: a caller on this member answers through a
//! oneshot channel, a remote caller through whatever the transport hands in.

use std::collections::HashMap;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::inflight::InFlightGuard;
use crate::error::CallError;

/// Where the answer to a call goes.
///
/// Contract: `send` never waits (a grain's turn must not block on a slow caller);
/// it answers `Err(reason)` when the answer could not be delivered (the caller went
/// away), with `reason` a short, bounded label for the `deadletter` metric.
pub(crate) trait Reply: Send + 'static {
    /// Delivers the answer, or says why it could not.
    fn send(self: Box<Self>, result: Result<Bytes, CallError>) -> Result<(), &'static str>;
}

/// A caller on this member waits on the other end.
impl Reply for oneshot::Sender<Result<Bytes, CallError>> {
    fn send(self: Box<Self>, result: Result<Bytes, CallError>) -> Result<(), &'static str> {
        (*self).send(result).map_err(|_| "caller_gone")
    }
}

/// One call: what to run, until when, and where the answer goes. Holding one counts
/// the call as in flight on this member.
pub(crate) struct Invocation {
    pub(crate) method: String,
    pub(crate) payload: Bytes,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) deadline: Instant,
    /// When the call reached this member (for `rpc.server.call.duration`).
    pub(crate) received: Instant,
    /// The SERVER span of the call, when this member records spans; it ends when the
    /// call is answered.
    pub(crate) trace: Option<opentelemetry::Context>,
    pub(crate) reply: Box<dyn Reply>,
    pub(crate) guard: InFlightGuard,
}
