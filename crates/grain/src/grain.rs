//! What a grain is: the [`Grain`] trait a user implements, the [`GrainError`] it
//! answers with, and the [`Kind`] that registers it on a node. The context a grain runs
//! in is in [`crate::context`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::context::GrainContext;
use crate::identity::ClusterIdentity;

pub use tonic::Code;

/// An application error a grain answers with: a gRPC-style code and a message. It
/// travels to the caller unchanged as [`crate::CallError::Application`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct GrainError {
    /// The gRPC status code.
    pub code: Code,
    /// A message for a human.
    pub message: String,
}

impl GrainError {
    /// An error with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `InvalidArgument`: the request is malformed.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    /// `Unimplemented`: the grain has no such method.
    pub fn unimplemented(method: &str) -> Self {
        Self::new(Code::Unimplemented, format!("unknown method {method}"))
    }

    /// `Internal`: the grain failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }
}

/// A virtual actor. One value of this type is one *activation*: it lives on the member
/// that owns its identity, handles one call at a time, and keeps its fields between
/// calls until it is passivated.
///
/// The code generator implements this trait for you from a `.proto` service; implement
/// it by hand only for untyped grains.
#[async_trait]
pub trait Grain: Send + 'static {
    /// Runs once, before the first call of this activation. An error fails that first
    /// call and discards the activation (the next call tries afresh).
    async fn activated(&mut self, _ctx: &GrainContext) -> Result<(), GrainError> {
        Ok(())
    }

    /// Handles one call of `method` (a path such as `fizzbuzz.v1.FizzService/SayFizz`)
    /// with an encoded request; answers the encoded response or an error.
    async fn handle(
        &mut self,
        ctx: &GrainContext,
        method: &str,
        payload: Bytes,
    ) -> Result<Bytes, GrainError>;

    /// Runs once when the activation ends gracefully (idle passivation or node
    /// shutdown); not after a panic.
    async fn deactivated(&mut self, _ctx: &GrainContext) {}
}

/// Makes a fresh grain for an identity.
pub type GrainFactory = Arc<dyn Fn(&ClusterIdentity) -> Box<dyn Grain> + Send + Sync>;

/// A grain kind a node hosts: its name, a factory, and per-kind options.
#[derive(Clone)]
pub struct Kind {
    pub(crate) name: Arc<str>,
    pub(crate) factory: GrainFactory,
    pub(crate) idle_timeout: Duration,
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kind")
            .field("name", &self.name)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl Kind {
    /// The default idle timeout after which an activation with no calls is passivated.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

    /// A kind named `name` whose activations `factory` makes.
    pub fn new<G, F>(name: impl Into<Arc<str>>, factory: F) -> Self
    where
        G: Grain,
        F: Fn(&ClusterIdentity) -> G + Send + Sync + 'static,
    {
        Self {
            name: name.into(),
            factory: Arc::new(move |id| Box::new(factory(id))),
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
        }
    }

    /// Passivate an activation after `timeout` without calls (default 10 minutes).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The kind's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}
