//! The standard gRPC health service (`grpc.health.v1.Health`), on a port of its own
//! (`--health-bind`), so that probes reach it whatever the member links use.
//!
//! - Readiness is the overall service `""`: `SERVING` while the node is listed as
//!   passing by Consul, not fenced and not leaving ([`grain::Node::readiness`]);
//!   `NOT_SERVING` before it is listed, while it is out of the cluster, and from the
//!   moment it starts to drain.
//! - Liveness is the service [`LIVENESS`]: `SERVING` as long as the process answers.
//!   It does not follow Consul, so a Consul outage does not make an orchestrator
//!   restart every node.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::ServingStatus;

use crate::AppError;

/// The health service name that answers liveness.
pub const LIVENESS: &str = "liveness";

/// Binds the health service's port (before the node starts, so that a port in use
/// stops the node before it joins).
pub async fn bind(bind: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(bind)
        .await
        .map_err(|e| AppError::Failed(format!("--health-bind {bind}: cannot listen: {e}")))
}

/// Serves the health service on `listener` until the process ends, readiness
/// following `ready`.
pub async fn serve(listener: TcpListener, mut ready: watch::Receiver<bool>) {
    let addr = listener
        .local_addr()
        .map_or_else(|e| format!("(unknown: {e})"), |a| a.to_string());
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    tokio::spawn(async move {
        loop {
            let status = if *ready.borrow_and_update() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter.set_service_status("", status).await;
            // The node is gone once its sender is: it stays not serving.
            if ready.changed().await.is_err() {
                reporter
                    .set_service_status("", ServingStatus::NotServing)
                    .await;
                break;
            }
        }
    });
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(async move {
        // One service, served directly: no router.
        if let Err(e) = tonic::transport::Server::builder()
            .serve_with_incoming(service, incoming)
            .await
        {
            tracing::error!("health service failed: {e}");
        }
    });
    tracing::info!(address = %addr, liveness = LIVENESS, "health service (grpc.health.v1) listening");
}
