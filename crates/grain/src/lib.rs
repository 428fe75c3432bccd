//! # grain — virtual actors that live across processes
//!
//! A program declares the grain [`Kind`]s it hosts, starts a [`Node`] with a
//! [`membership::MembershipProvider`], and calls any grain by [`ClusterIdentity`]
//! through a [`Cluster`] handle without knowing where it lives. The grain is activated
//! on first call on the member that owns the identity (rendezvous hashing over the
//! members hosting the kind), keeps its state between calls, and is passivated when
//! idle. Members talk over one gRPC stream per peer.
//!
//! ## Guarantees
//!
//! - **Ordering:** one call at a time per activation (turn-based), in the order calls
//!   reach its mailbox; calls from one caller task made one after another arrive in
//!   that order.
//! - **Delivery:** at most once by default. A call is retried only when it provably did
//!   not run: it was never written to the owner, the owner answered "wrong owner", or
//!   the owner was shutting down and refused it before accepting. A call that timed
//!   out, or whose link broke after it was written, is not retried.
//! - **One activation:** at most one live activation per identity per member, always.
//!   Across members, at most one *except briefly during membership churn*: two members
//!   whose topologies differ may each believe they own an identity until both see the
//!   same topology; the owner check on arrival shortens that window.
//! - **Failure:** a panic inside a grain method fails that call with `Internal` and
//!   the next call gets a fresh activation; a call past its deadline is cancelled and
//!   answered `Timeout`; when a member leaves the topology, calls in flight to it fail
//!   at once.
//!
//! The runtime knows no Consul (providers plug in through
//! [`membership::MembershipProvider`]) and no OpenTelemetry SDK: it records the
//! instruments of [`metrics::CATALOG`] through the `opentelemetry` API, on the meter
//! given in [`NodeConfig::meter`], and the spans of grain calls ([`trace`]) on the
//! tracer and propagator given in [`NodeConfig::tracing`].

// A call travels: cluster (the caller's handle) → placement over the topology
// (suspicion routes around members that refuse connections) → remote (the link to
// the owner, the wire) → inbound (the owner's check) → catalog (the activation) →
// grain and context. ARCHITECTURE.md walks through them in that order.
mod catalog;
pub mod cluster;
pub mod context;
pub mod grain;
mod inbound;
pub mod placement;
mod readiness;
mod remote;
mod retry;
mod suspicion;
mod topology;

// Around it: setup, life cycle, membership, vocabulary, errors, metrics, codegen.
pub mod call;
pub mod codegen;
pub mod config;
pub mod error;
pub mod identity;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod tls;
pub mod trace;

#[cfg(feature = "fuzzing")]
pub mod fuzzing;

pub use call::{Backoff, CallOptions};
pub use cluster::{Cluster, MissingKinds, RetryCounts};
pub use config::NodeConfig;
pub use context::GrainContext;
pub use error::{CallError, StartError};
pub use grain::{Code, Grain, GrainError, Kind};
pub use identity::{ClusterIdentity, Member, MemberId, Topology};
pub use node::Node;
pub use tls::TlsConfig;
pub use trace::Tracing;
