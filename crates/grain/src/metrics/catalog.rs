//! The catalog of instruments: names, kinds, units, attributes and meanings.

/// The kind of an instrument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstrumentKind {
    /// A monotonic sum.
    Counter,
    /// A sum that goes up and down.
    UpDownCounter,
    /// A distribution.
    Histogram,
    /// The last value.
    Gauge,
}

impl InstrumentKind {
    /// The word used in `docs/metrics.md`.
    pub fn as_str(self) -> &'static str {
        match self {
            InstrumentKind::Counter => "counter",
            InstrumentKind::UpDownCounter => "updowncounter",
            InstrumentKind::Histogram => "histogram",
            InstrumentKind::Gauge => "gauge",
        }
    }
}

/// One instrument of the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstrumentDef {
    /// The metric name.
    pub name: &'static str,
    /// Counter, up-down counter, histogram or gauge.
    pub kind: InstrumentKind,
    /// The OpenTelemetry unit.
    pub unit: &'static str,
    /// The attributes of its data points.
    pub attributes: &'static [&'static str],
    /// What it means.
    pub description: &'static str,
}

macro_rules! catalog {
    ($($id:ident = $name:literal, $kind:ident, $unit:literal, [$($attr:literal),*], $desc:literal;)*) => {
        /// Instrument names, as constants.
        pub mod names {
            $(
                #[doc = $desc]
                pub const $id: &str = $name;
            )*
        }
        /// Every instrument the runtime records.
        pub const CATALOG: &[InstrumentDef] = &[
            $(InstrumentDef {
                name: $name,
                kind: InstrumentKind::$kind,
                unit: $unit,
                attributes: &[$($attr),*],
                description: $desc,
            },)*
        ];
    };
}

catalog! {
    ACTOR_SPAWN = "protoactor_actor_spawn_count", Counter, "{activation}", ["kind"],
        "Grain activations started.";
    ACTOR_STOPPED = "protoactor_actor_stopped_count", Counter, "{activation}", ["kind"],
        "Grain activations stopped (idle passivation, shutdown, or after a failure).";
    ACTOR_RESTARTED = "protoactor_actor_restarted_count", Counter, "{activation}", ["kind"],
        "Grain activations discarded after a failure, to be activated afresh by the next call.";
    ACTOR_FAILURE = "protoactor_actor_failure_count", Counter, "{failure}", ["kind"],
        "Panics in grain methods or activation hooks, and failed activations.";
    ACTOR_RECEIVE = "protoactor_actor_messagereceive_duration", Histogram, "s", ["kind", "method", "outcome"],
        "Time a grain spent handling one call.";
    ACTOR_MAILBOX = "protoactor_actor_mailbox_length", UpDownCounter, "{call}", ["kind"],
        "Calls waiting in activation mailboxes.";
    DEADLETTER = "protoactor_deadletter_count", Counter, "{message}", ["reason"],
        "Answers that found no caller (it had given up) and calls that found no activation.";
    FUTURE_STARTED = "protoactor_future_started_count", Counter, "{call}", ["kind", "method"],
        "Grain calls started by this member.";
    FUTURE_COMPLETED = "protoactor_future_completed_count", Counter, "{call}", ["kind", "method", "outcome"],
        "Grain calls that completed (with an answer or an error other than a timeout).";
    FUTURE_TIMEDOUT = "protoactor_future_timedout_count", Counter, "{call}", ["kind", "method"],
        "Grain calls that timed out.";
    REMOTE_SERIALIZE = "protoremote_message_serialize_count", Counter, "{message}", ["message"],
        "Envelopes written to peers (requests by callers, responses by callees).";
    REMOTE_DESERIALIZE = "protoremote_message_deserialize_count", Counter, "{message}", ["message"],
        "Envelopes read from peers.";
    REMOTE_CONNECTED = "protoremote_endpoint_connected_count", Counter, "{connection}", ["peer"],
        "Links to peers established.";
    REMOTE_DISCONNECTED = "protoremote_endpoint_disconnected_count", Counter, "{connection}", ["peer", "reason"],
        "Links to peers lost or closed.";
    REMOTE_WRITE = "protoremote_write_duration", Histogram, "s", [],
        "Time a batch waited for the peer stream to accept it (backpressure).";
    CLUSTER_SPAWN = "protocluster_virtualactor_spawn_duration", Histogram, "s", ["kind"],
        "Time to activate a grain (its activated hook).";
    CLUSTER_REQUEST = "protocluster_virtualactor_requestasync_duration", Histogram, "s", ["kind", "method", "source", "outcome"],
        "Duration of grain calls made by this member; source says whether the owner came from the placement cache or a lookup.";
    CLUSTER_RETRY = "protocluster_virtualactor_requestasync_retry_count", Counter, "{retry}", ["kind", "method", "reason"],
        "Retries of grain calls that provably did not run.";
    CLUSTER_RESOLVE = "protocluster_resolve_pid_duration", Histogram, "s", ["kind"],
        "Time to look up the member owning a grain, when the placement cache did not hold it.";
    CLUSTER_VIRTUALACTORS = "protocluster_virtualactors", UpDownCounter, "{activation}", ["kind"],
        "Live grain activations on this member.";
    CLUSTER_MEMBERS = "protocluster_members_count", Gauge, "{member}", [],
        "Members in this member's topology.";
    TOPOLOGY_CHANGES = "grain_cluster_topology_changes_count", Counter, "{change}", [],
        "Topology changes seen by this member.";
    MEMBERSHIP_ERRORS = "grain_membership_errors_count", Counter, "{error}", ["operation", "reason"],
        "Failed calls to the membership provider (register, keep_alive, watch, deregister).";
    MEMBERSHIP_UP = "grain_membership_provider_up", Gauge, "1", [],
        "1 while the membership provider answers, 0 while it fails (the last topology is kept).";
    REMOTE_BATCH = "grain_remote_batch_size", Histogram, "{message}", ["message"],
        "Envelopes per batch written to a peer.";
    REMOTE_INFLIGHT = "grain_remote_inflight_calls", UpDownCounter, "{call}", [],
        "Calls written to peers and not yet answered.";
    RPC_CLIENT_DURATION = "rpc.client.call.duration", Histogram, "s", ["rpc.system.name", "rpc.method", "rpc.response.status_code", "error.type", "server.address", "server.port"],
        "Duration of grain calls made by this member, retries included (OpenTelemetry RPC conventions; equal to the CLIENT span's duration).";
    RPC_SERVER_DURATION = "rpc.server.call.duration", Histogram, "s", ["rpc.system.name", "rpc.method", "rpc.response.status_code", "error.type", "server.address", "server.port"],
        "Duration of grain calls served by this member, from arrival to answer (OpenTelemetry RPC conventions; equal to the SERVER span's duration).";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_follow_the_conventions() {
        let mut seen = std::collections::HashSet::new();
        for d in CATALOG {
            assert!(seen.insert(d.name), "{} is listed twice", d.name);
            assert!(
                [
                    "protoactor_",
                    "protoremote_",
                    "protocluster_",
                    "grain_",
                    "rpc."
                ]
                .iter()
                .any(|p| d.name.starts_with(p)),
                "{} has no known prefix",
                d.name
            );
            if d.kind == InstrumentKind::Histogram && d.name.ends_with("duration") {
                assert_eq!(d.unit, "s", "{} is a duration in seconds", d.name);
            }
            assert!(
                !d.attributes.contains(&"identity"),
                "{} carries grain identities",
                d.name
            );
        }
    }
}
