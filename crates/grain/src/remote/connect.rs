//! Opening a stream to a member: connecting (over TLS when set), the handshake
//! metadata, and checking who answered. Links use it to open their stream, and the
//! suspicion probe to ask an address which member serves there now.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;

use super::{HDR_ADDRESS, HDR_CLUSTER, HDR_MEMBER_ID, HDR_PROTOCOL, pb};
use crate::identity::{Member, MemberId};

/// Who this member says it is in a handshake, and how it connects.
#[derive(Clone, Debug)]
pub(crate) struct Dialer {
    pub(crate) cluster: String,
    pub(crate) member_id: MemberId,
    pub(crate) address: String,
    pub(crate) max_message_bytes: usize,
    pub(crate) connect_timeout: Duration,
    /// TLS to every peer, when set.
    pub(crate) tls: Option<Arc<crate::tls::Tls>>,
}

impl Dialer {
    /// The dialer of member `me` under `config`, connecting over `tls` when set.
    pub(crate) fn of(
        config: &crate::config::NodeConfig,
        me: &Member,
        tls: Option<Arc<crate::tls::Tls>>,
    ) -> Self {
        Dialer {
            cluster: config.cluster_name.clone(),
            member_id: me.id.clone(),
            address: me.address.clone(),
            max_message_bytes: config.max_message_bytes,
            connect_timeout: config.connect_timeout,
            tls,
        }
    }
}

/// Why a stream could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// Something answered at the member's address, but as another member, or as a
    /// member of another cluster: the process this member was is gone (a restarted
    /// process has a new member id), whatever its address does now.
    Replaced(String),
    /// Any other failure: no connection, a refused handshake, a timeout.
    Failed(String),
}

impl From<String> for OpenError {
    fn from(reason: String) -> Self {
        OpenError::Failed(reason)
    }
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Replaced(m) | OpenError::Failed(m) => f.write_str(m),
        }
    }
}

/// Connects to `member` and opens the `grain.v1.Remote/Open` stream, checking its
/// cluster, member id and protocol version. `Err` says what went wrong.
pub(crate) async fn open(
    config: &Dialer,
    member: &Member,
) -> Result<
    (
        mpsc::Sender<pb::RequestBatch>,
        tonic::Streaming<pb::ResponseBatch>,
    ),
    OpenError,
> {
    let uri = format!("http://{}", member.address);
    let endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|e| format!("invalid peer address {uri}: {e}"))?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(8 << 20));
    let connecting = match &config.tls {
        Some(tls) => {
            let (tls, address) = (tls.clone(), member.address.clone());
            let connector = tower::service_fn(move |_: http::Uri| {
                let (tls, address) = (tls.clone(), address.clone());
                async move {
                    tls.connect(&address)
                        .await
                        .map(hyper_util::rt::TokioIo::new)
                }
            });
            futures::future::Either::Left(endpoint.connect_with_connector(connector))
        }
        None => futures::future::Either::Right(endpoint.connect()),
    };
    let channel = tokio::time::timeout(config.connect_timeout, connecting)
        .await
        .map_err(|_| format!("connecting to {uri} timed out"))?
        .map_err(|e| {
            format!(
                "connecting to {uri} failed: {}",
                crate::tls::error_chain(&e)
            )
        })?;
    let mut client = pb::remote_client::RemoteClient::new(channel)
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);
    let (tx, rx) = mpsc::channel::<pb::RequestBatch>(4);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    let md = request.metadata_mut();
    let meta = |v: &str| MetadataValue::try_from(v).map_err(|e| format!("bad metadata {v:?}: {e}"));
    md.insert(HDR_CLUSTER, meta(&config.cluster)?);
    md.insert(HDR_MEMBER_ID, meta(config.member_id.as_str())?);
    md.insert(HDR_ADDRESS, meta(&config.address)?);
    md.insert(HDR_PROTOCOL, MetadataValue::from(super::PROTOCOL_VERSION));
    let response = tokio::time::timeout(config.connect_timeout, client.open(request))
        .await
        .map_err(|_| format!("handshake with {uri} timed out"))?
        .map_err(|status| {
            if status.code() == tonic::Code::FailedPrecondition {
                tracing::error!(peer = %member.id, address = %member.address,
                    "peer refused this member: {}", status.message());
            }
            let hint = match (&config.tls, status.source()) {
                // A TLS 1.3 callee checks this member's certificate after the
                // handshake looked done here; when it refuses, the connection
                // usually just closes.
                (Some(_), Some(_)) => {
                    "; the peer closed the TLS connection: it may have refused this \
                     member's certificate (is it signed by the CA the peer trusts?)"
                }
                _ => "",
            };
            format!("peer refused the connection: {}{hint}", refusal(&status))
        })?;
    let md = response.metadata();
    let their_cluster = md
        .get(HDR_CLUSTER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let their_id = md
        .get(HDR_MEMBER_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if their_cluster != config.cluster {
        let msg = format!(
            "cluster mismatch: {} answers for cluster '{their_cluster}', this member belongs to '{}'",
            member.address, config.cluster
        );
        tracing::error!(peer = %member.id, "{msg}");
        return Err(OpenError::Replaced(msg));
    }
    if their_id != member.id.as_str() {
        return Err(OpenError::Replaced(format!(
            "{} is now member '{their_id}', not '{}'",
            member.address, member.id
        )));
    }
    if let Err(msg) = super::check_protocol(md.get(HDR_PROTOCOL).map(|v| v.to_str()), "callee") {
        let msg = format!("{}: {msg}", member.address);
        tracing::error!(peer = %member.id, "{msg}");
        return Err(OpenError::Failed(msg));
    }
    Ok((tx, response.into_inner()))
}

/// What a refused `Open` says: the status's message and, for a transport failure, its
/// causes (a TLS alert from a callee that refused this member's certificate arrives
/// here, not at the handshake).
fn refusal(status: &tonic::Status) -> String {
    match status.source() {
        Some(source) => {
            let causes = crate::tls::error_chain(source);
            if status.message().contains(&causes) {
                status.message().to_string()
            } else {
                format!("{}: {causes}", status.message())
            }
        }
        None => status.message().to_string(),
    }
}
