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

/// `fizzbuzz health`: asks a node's health service for a status, as a container health
/// check or a person would (a standard `grpc.health.v1` client, like
/// `grpc_health_probe`).
#[derive(clap::Args, Clone, Debug)]
pub struct ProbeArgs {
    /// The health service's host:port (the node's --health-bind).
    #[arg(long, default_value = "127.0.0.1:7071")]
    pub addr: String,
    /// The service to ask about: "" (the default) is readiness, "liveness" liveness.
    #[arg(long, default_value = "")]
    pub service: String,
    /// How long connecting and each answer may take.
    #[arg(long, default_value = "3s", value_parser = crate::config::parse_duration)]
    pub timeout: std::time::Duration,
    /// Follow the status with the Watch call: print each change until the node goes
    /// away (exit 0 if the last status seen was SERVING, else 1).
    #[arg(long)]
    pub watch: bool,
}

/// Runs the probe: prints the status (`SERVING`, `NOT_SERVING`, …) on stdout and
/// returns exit status 0 when it is `SERVING`, 1 otherwise; an unreachable service is
/// an error that names the address.
pub async fn probe(args: &ProbeArgs) -> Result<u8, AppError> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let uri = format!("http://{}", args.addr);
    let endpoint = tonic::transport::Endpoint::from_shared(uri)
        .map_err(|e| AppError::Usage(format!("--addr {:?}: {e}", args.addr)))?
        .connect_timeout(args.timeout);
    let unreachable = |e: &dyn std::fmt::Display| {
        AppError::Failed(format!("health service at {}: {e}", args.addr))
    };
    let channel = endpoint.connect().await.map_err(|e| unreachable(&e))?;
    let mut client = HealthClient::new(channel);
    let request = || {
        tonic::Request::new(HealthCheckRequest {
            service: args.service.clone(),
        })
    };
    let name = |status: i32| {
        tonic_health::pb::health_check_response::ServingStatus::try_from(status).map_or_else(
            |_| format!("UNKNOWN({status})"),
            |s| s.as_str_name().to_string(),
        )
    };
    const SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    if !args.watch {
        let mut r = request();
        // The grpc-timeout header bounds the call at both ends (tonic's channel enforces
        // it too); the outer timeout bounds it whatever the transport does.
        r.set_timeout(args.timeout);
        let status = tokio::time::timeout(args.timeout, client.check(r))
            .await
            .map_err(|_| unreachable(&"no answer in time"))?
            .map_err(|e| unreachable(&e.message()))?
            .into_inner()
            .status;
        println!("{}", name(status));
        return Ok(if status == SERVING { 0 } else { 1 });
    }
    // A watch has no deadline of its own: the timeout covers only its start.
    let mut stream = tokio::time::timeout(args.timeout, client.watch(request()))
        .await
        .map_err(|_| unreachable(&"no answer in time"))?
        .map_err(|e| unreachable(&e.message()))?
        .into_inner();
    let mut last = None;
    // The stream ends when the node stops (or its connection breaks).
    while let Ok(Some(answer)) = stream.message().await {
        // The service may repeat a status; a change is what is worth a line.
        if last != Some(answer.status) {
            use std::io::Write;
            println!("{}", name(answer.status));
            let _ = std::io::stdout().flush();
        }
        last = Some(answer.status);
    }
    Ok(if last == Some(SERVING) { 0 } else { 1 })
}
