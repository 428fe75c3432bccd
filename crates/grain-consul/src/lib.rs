//! # grain-consul — Consul membership for grain clusters
//!
//! - [`ConsulMembership`]: a [`grain::membership::MembershipProvider`] over Consul's agent
//!   HTTP API: each member registers as an instance of the service named after the
//!   cluster, with a TTL check it keeps passing; the topology is watched with blocking
//!   queries on the passing instances. Configured by [`ConsulConfig`] (environment:
//!   `CONSUL_HTTP_ADDR`, `CONSUL_HTTP_TOKEN`, `CONSUL_DATACENTER`).
//! - `agent::DevAgent` (feature `dev-agent`, off by default): a Consul-compatible dev
//!   agent for machines with no Consul, also runnable as the `consul-dev-agent` binary.
//!   Without the feature this crate builds no HTTP server and no command-line parser.
//!
//! This crate knows nothing of activations or transport: it only speaks the membership
//! contract.

#[cfg(feature = "dev-agent")]
pub mod agent;
pub mod api;
mod client;
pub mod config;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod health;
mod provider;
pub mod tls;

#[cfg(feature = "dev-agent")]
pub use agent::{DevAgent, DevAgentArgs, DevAgentConfig, DevAgentError, DevAgentTls};
pub use client::ConsulError;
pub use config::{ConsulConfig, Token};
pub use provider::{ConsulMembership, meta};
pub use tls::ConsulTls;
