//! What a call arriving from another member goes through before the catalog: the
//! transport hands it to [`Inbound`] (its [`Dispatch`]), which refuses a kind this
//! member does not host, a call while shutting down (retriable), and a call for an
//! identity this member does not own under *its* topology ("wrong owner", retriable);
//! the rest go to the activation catalog, which answers through the transport's
//! [`ResponseSink`] (the [`Reply`] implemented here).

use bytes::Bytes;

use crate::catalog::{Invocation, Reply};
use crate::cluster::Cluster;
use crate::context::GrainContext;
use crate::error::CallError;
use crate::grain::Code;
use crate::identity::{ClusterIdentity, MemberId};
use crate::remote::{self, Dispatch, ResponseSink, pb};

/// The answer to a remote caller goes onto that caller's response stream.
impl Reply for ResponseSink {
    fn send(self: Box<Self>, result: Result<Bytes, CallError>) -> Result<(), &'static str> {
        (*self).send(result)
    }
}

/// The server side's entry into this member.
pub(crate) struct Inbound {
    cluster: Cluster,
}

impl Inbound {
    /// The entry into the member `cluster` is the handle of.
    pub(crate) fn new(cluster: Cluster) -> Self {
        Self { cluster }
    }

    fn refuse(&self, sink: ResponseSink, error: CallError) {
        let catalog = &self.cluster.shared.catalog;
        catalog.answer(Box::new(sink), Err(error));
    }
}

impl Dispatch for Inbound {
    fn cluster_name(&self) -> &str {
        &self.cluster.shared.config.cluster_name
    }

    fn member_id(&self) -> &MemberId {
        &self.cluster.shared.me.id
    }

    fn dispatch(&self, _from: &MemberId, request: pb::Request, sink: ResponseSink) {
        let shared = &self.cluster.shared;
        let guard = shared.inflight.enter();
        let id = ClusterIdentity::new(request.kind, request.identity);
        if !shared.catalog.hosts(id.kind()) {
            // Not a placement disagreement (retrying cannot help): say what is wrong.
            let err = CallError::Application {
                code: Code::Unimplemented,
                message: format!("member {} hosts no grain kind {}", shared.me.id, id.kind()),
            };
            return self.refuse(sink, err);
        }
        if !shared.catalog.is_accepting() {
            let member = shared.me.id.clone();
            return self.refuse(sink, CallError::ShuttingDown { member });
        }
        let owned = shared
            .topology
            .load()
            .owner(id.kind(), id.identity())
            .is_some_and(|m| m.id == shared.me.id);
        if !owned {
            let err = CallError::WrongOwner {
                member: shared.me.id.clone(),
                target: id.to_string(),
            };
            return self.refuse(sink, err);
        }
        let inv = Invocation {
            method: request.method,
            payload: request.payload,
            headers: request.headers,
            deadline: remote::deadline_from_micros(request.timeout_micros),
            reply: Box::new(sink),
            guard,
        };
        let new_context = |id| GrainContext::new(id, self.cluster.clone());
        shared.catalog.deliver(id, inv, &new_context);
    }
}
