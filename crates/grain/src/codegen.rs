//! The facade generated code imports (`grain-build` writes `::grain::codegen::…`).
//!
//! Everything generated code needs, and nothing else: the runtime can change its insides
//! without breaking generated code as long as this module keeps its shape. Not meant to
//! be used by hand.

pub use async_trait::async_trait;
pub use bytes::Bytes;
pub use prost;
pub use prost_types;

pub use crate::{
    CallError, CallOptions, Cluster, ClusterIdentity, Grain, GrainContext, GrainError, Kind,
};

/// Decodes the request of `method`; a malformed payload is `InvalidArgument`.
pub fn decode<M: prost::Message + Default>(method: &str, payload: Bytes) -> Result<M, GrainError> {
    M::decode(payload).map_err(|e| {
        GrainError::invalid_argument(format!("cannot decode the request of {method}: {e}"))
    })
}

/// Encodes a message.
pub fn encode<M: prost::Message>(message: &M) -> Bytes {
    Bytes::from(message.encode_to_vec())
}

/// Calls `method` of grain `identity` with a typed request and decodes the typed
/// response. `options` of `None` means the cluster's defaults. `idempotent` is what the
/// `.proto` declares (`idempotency_level` `NO_SIDE_EFFECTS` or `IDEMPOTENT`): such a
/// call, like one whose options say [`CallOptions::idempotent`], is also retried after
/// an attempt that may have run; any other stays at most once.
pub async fn unary<Req, Resp>(
    cluster: &Cluster,
    identity: &ClusterIdentity,
    method: &str,
    request: &Req,
    options: Option<&CallOptions>,
    idempotent: bool,
) -> Result<Resp, CallError>
where
    Req: prost::Message,
    Resp: prost::Message + Default,
{
    let payload = encode(request);
    let options = options.unwrap_or_else(|| cluster.call_defaults());
    let idempotent = idempotent || options.idempotent;
    let answer = cluster
        .call_with_idempotency(identity, method, payload, options, idempotent)
        .await?;
    Resp::decode(answer).map_err(|e| {
        CallError::Codec(format!(
            "cannot decode the response of {identity} {method}: {e}"
        ))
    })
}

/// Includes the code `grain-build` generated for a protobuf package:
/// `pub mod counter { grain::include_grains!("counter.v1"); }`.
#[macro_export]
macro_rules! include_grains {
    ($package:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $package, ".rs"));
    };
}
