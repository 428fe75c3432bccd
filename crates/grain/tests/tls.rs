//! TLS between members: calls over TLS and mutual TLS; peers without a certificate, or
//! with one another CA signed, refused with a clear error and a log line; certificates
//! that cannot work refused at start, naming what is wrong.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use common::certs::{Ca, Leaf};
use common::*;
use grain::membership::InMemoryMembership;
use grain::{CallError, ClusterIdentity, Node, NodeConfig, StartError, TlsConfig};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line of this test binary (one subscriber for all its tests).
fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        logs
    })
}

/// Waits (bounded) for a log line holding every one of `parts`.
async fn logged(parts: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&logs().0.lock().map(|v| v.clone()).unwrap_or_default())
            .into_owned();
        if let Some(line) = text.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return line.to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no log line with {parts:?} in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn tls_config(cluster: &str, prefix: &str, tls: Option<TlsConfig>) -> NodeConfig {
    NodeConfig {
        tls,
        call_defaults: grain::CallOptions {
            timeout: Duration::from_secs(3),
            max_attempts: 2,
            ..Default::default()
        },
        ..config(cluster, prefix)
    }
}

fn mutual(ca: &Ca, leaf: &Leaf) -> TlsConfig {
    TlsConfig::new(leaf.cert.clone(), leaf.key.clone()).with_ca(ca.pem())
}

/// A callee hosting the counter and a caller hosting nothing, on one provider: every
/// call of the caller goes over the link.
async fn pair(
    cluster: &str,
    callee_tls: Option<TlsConfig>,
    caller_tls: Option<TlsConfig>,
) -> (Node, Node) {
    let _ = logs();
    let provider = Arc::new(InMemoryMembership::new(Duration::from_secs(30)));
    let callee = Node::start(
        tls_config(cluster, "callee", callee_tls),
        vec![counter_kind()],
        provider.clone(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let caller = Node::start(tls_config(cluster, "caller", caller_tls), vec![], provider)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ok = caller
        .cluster()
        .wait_for_kinds(&[COUNTER], Duration::from_secs(5))
        .await;
    assert!(ok.is_ok(), "the caller never saw the counter's member");
    (callee, caller)
}

async fn add(node: &Node, id: &str) -> Result<Bytes, CallError> {
    node.cluster()
        .call(&ClusterIdentity::new(COUNTER, id), ADD, Bytes::new())
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_work_over_mutual_tls() {
    let ca = Ca::new("members");
    let (a, b) = (
        ca.leaf(&["127.0.0.1"]),
        ca.leaf(&["127.0.0.1", "localhost"]),
    );
    let (callee, caller) = pair("mtls", Some(mutual(&ca, &a)), Some(mutual(&ca, &b))).await;
    for i in 0..20 {
        let r = add(&caller, &format!("x{i}")).await;
        assert!(r.is_ok(), "call {i} over mutual TLS: {r:?}");
    }
    assert_eq!(
        callee.activation_count(),
        20,
        "every call ran on the callee"
    );
    caller.shutdown().await;
    callee.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_whose_certificates_name_one_server_name_and_not_their_addresses_talk() {
    // As in Kubernetes: pod IPs are not known when certificates are made.
    let ca = Ca::new("members");
    let named = |leaf: &Leaf| mutual(&ca, leaf).with_server_name("members.fizzbuzz");
    let (a, b) = (
        ca.leaf(&["members.fizzbuzz"]),
        ca.leaf(&["members.fizzbuzz"]),
    );
    let (callee, caller) = pair("named", Some(named(&a)), Some(named(&b))).await;
    for i in 0..5 {
        let r = add(&caller, &format!("n{i}")).await;
        assert!(r.is_ok(), "call {i}: {r:?}");
    }
    caller.shutdown().await;
    callee.shutdown().await;
    // A certificate of the same CA for another name is refused by its callers.
    let other = ca.leaf(&["other.fizzbuzz", "127.0.0.1"]);
    let (callee, caller) = pair(
        "named-other",
        Some(mutual(&ca, &other)),
        Some(named(&ca.leaf(&["members.fizzbuzz"]))),
    )
    .await;
    let r = add(&caller, "n").await;
    let msg = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("certificate"), "{msg}");
    caller.shutdown().await;
    callee.shutdown().await;
    // And a member's own certificate must hold the name.
    let msg = start_error(mutual(&ca, &other).with_server_name("members.fizzbuzz")).await;
    assert!(
        msg.contains("does not name the TLS server name") && msg.contains("members.fizzbuzz"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_work_over_one_way_tls_and_the_link_is_encrypted() {
    let ca = Ca::new("members");
    let one_way = |leaf: &Leaf| {
        TlsConfig::new(leaf.cert.clone(), leaf.key.clone())
            .with_ca(ca.pem())
            .require_client_certificates(false)
    };
    let (a, b) = (ca.leaf(&["127.0.0.1"]), ca.leaf(&["127.0.0.1"]));
    let (callee, caller) = pair("tls", Some(one_way(&a)), Some(one_way(&b))).await;
    let r = add(&caller, "y").await;
    assert!(r.is_ok(), "a call over TLS: {r:?}");

    // The callee speaks only TLS: a plaintext member's connection is refused.
    let provider = Arc::new(InMemoryMembership::new(Duration::from_secs(30)));
    let plain = Node::start(tls_config("tls", "plain", None), vec![], provider.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    grain::membership::MembershipProvider::register(&*provider, callee.member())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        plain
            .cluster()
            .wait_for_kinds(&[COUNTER], Duration::from_secs(5))
            .await
            .is_ok()
    );
    match add(&plain, "z").await {
        Err(CallError::MemberUnavailable { maybe_ran, .. }) => assert!(!maybe_ran),
        other => panic!("a plaintext call to a TLS member answered {other:?}"),
    }
    logged(&[
        "refused a connection",
        "TLS handshake failed",
        "peers must speak TLS",
    ])
    .await;
    plain.shutdown().await;
    caller.shutdown().await;
    callee.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_whose_certificate_another_ca_signed_is_refused_on_both_sides() {
    let ca = Ca::new("members");
    let other = Ca::new("intruders");
    let a = ca.leaf(&["127.0.0.1"]);
    // It trusts our CA (so it accepts the callee), but presents the other CA's
    // certificate.
    let b = other.leaf(&["127.0.0.1"]);
    let intruder = TlsConfig::new(b.cert.clone(), b.key.clone()).with_ca(ca.pem());
    let (callee, caller) = pair("mtls-other-ca", Some(mutual(&ca, &a)), Some(intruder)).await;
    match add(&caller, "x").await {
        Err(CallError::MemberUnavailable {
            reason, maybe_ran, ..
        }) => {
            assert!(!maybe_ran);
            assert!(
                reason.to_lowercase().contains("certificate") || reason.contains("UnknownCA"),
                "the caller's error does not say its certificate was refused: {reason}"
            );
        }
        other => panic!("an intruder's call answered {other:?}"),
    }
    assert_eq!(
        callee.activation_count(),
        0,
        "the refused call must not run"
    );
    logged(&[
        "refused a connection",
        "TLS handshake failed",
        "signed by this member's CA",
    ])
    .await;
    caller.shutdown().await;
    callee.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_whose_certificate_another_ca_signed_is_refused_by_the_caller() {
    let ca = Ca::new("members");
    let other = Ca::new("impostors");
    let (a, b) = (other.leaf(&["127.0.0.1"]), ca.leaf(&["127.0.0.1"]));
    let impostor = TlsConfig::new(a.cert.clone(), a.key.clone()).with_ca(ca.pem());
    let (callee, caller) = pair("mtls-impostor", Some(impostor), Some(mutual(&ca, &b))).await;
    match add(&caller, "x").await {
        Err(CallError::MemberUnavailable { reason, .. }) => assert!(
            reason.contains("invalid peer certificate") && reason.contains("UnknownIssuer"),
            "{reason}"
        ),
        other => panic!("a call to an impostor answered {other:?}"),
    }
    assert_eq!(callee.activation_count(), 0);
    caller.shutdown().await;
    callee.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused_by_a_mutual_tls_member() {
    use rustls::pki_types::ServerName;
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let ca = Ca::new("members");
    let leaf = ca.leaf(&["127.0.0.1"]);
    let provider = Arc::new(InMemoryMembership::new(Duration::from_secs(30)));
    let node = Node::start(
        tls_config("mtls-anonymous", "callee", Some(mutual(&ca, &leaf))),
        vec![counter_kind()],
        provider,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let _ = logs();

    // A TLS client that trusts the CA but has no certificate of its own.
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca.pem().as_bytes()) {
        roots
            .add(c.unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("{e}"))
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(node.local_addr())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let local = tcp.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let name = ServerName::try_from("127.0.0.1").unwrap_or_else(|e| panic!("{e}"));
    // With TLS 1.3 the client's side of the handshake completes; the refusal is an
    // alert on the first read.
    let refused = match connector.connect(name, tcp).await {
        Err(_) => true,
        Ok(mut tls) => {
            let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
            let mut buf = [0u8; 64];
            let read = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await;
            matches!(read, Ok(Err(_)) | Ok(Ok(0)))
        }
    };
    assert!(refused, "a client without a certificate was served");
    let line = logged(&["refused a connection", &local.to_string()]).await;
    assert!(line.contains("certificate"), "{line}");
    node.shutdown().await;
}

async fn start_error(tls: TlsConfig) -> String {
    let provider = Arc::new(InMemoryMembership::new(Duration::from_secs(30)));
    match Node::start(tls_config("bad", "bad", Some(tls)), vec![], provider).await {
        Err(StartError::Config(msg)) => msg,
        Err(e) => panic!("a start error other than Config: {e}"),
        Ok(node) => {
            node.shutdown().await;
            panic!("a node started with a certificate that cannot work")
        }
    }
}

#[tokio::test]
async fn certificates_that_cannot_work_are_refused_at_start_naming_what_is_wrong() {
    let ca = Ca::new("members");
    let (a, b) = (ca.leaf(&["127.0.0.1"]), ca.leaf(&["127.0.0.1"]));

    let msg = start_error(TlsConfig::new(a.cert.clone(), b.key.clone())).await;
    assert!(msg.contains("does not match"), "{msg}");

    let elsewhere = ca.leaf(&["fizz.example"]);
    let msg = start_error(TlsConfig::new(elsewhere.cert, elsewhere.key)).await;
    assert!(
        msg.contains("does not name") && msg.contains("127.0.0.1"),
        "{msg}"
    );

    let msg =
        start_error(TlsConfig::new(a.cert.clone(), a.key.clone()).with_ca(a.key.clone())).await;
    assert!(
        msg.contains("CA") && msg.contains("no certificate"),
        "{msg}"
    );

    let msg = start_error(TlsConfig::new("not PEM", a.key.clone())).await;
    assert!(
        msg.contains("certificate") && msg.contains("no certificate"),
        "{msg}"
    );

    let msg = start_error(TlsConfig::new(a.cert.clone(), "")).await;
    assert!(msg.contains("key"), "{msg}");

    // The key never shows in Debug.
    let shown = format!("{:?}", TlsConfig::new(a.cert.clone(), a.key.clone()));
    assert!(
        !shown.contains("PRIVATE KEY") && shown.contains("redacted"),
        "{shown}"
    );
}
