//! The provider over HTTPS: an HTTPS dev agent, verified with the CA the
//! `CONSUL_CACERT` setting names; refused without it; a client certificate for an agent
//! that verifies incoming connections; `CONSUL_HTTP_SSL_VERIFY=false`.

use std::path::PathBuf;
use std::time::Duration;

use grain::membership::MembershipProvider;
use grain::{Member, MemberId};
use grain_consul::{
    ConsulConfig, ConsulMembership, ConsulTls, DevAgent, DevAgentConfig, DevAgentTls,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};

struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let ca = CertifiedIssuer::self_signed(params, key).unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        Self { dir, ca }
    }

    fn ca_file(&self) -> PathBuf {
        let path = self.dir.path().join("ca.pem");
        std::fs::write(&path, self.ca.pem()).unwrap_or_else(|e| panic!("{e}"));
        path
    }

    /// A certificate for 127.0.0.1: (cert PEM, key PEM).
    fn leaf(&self) -> (String, String) {
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let cert = params
            .signed_by(&key, &self.ca)
            .unwrap_or_else(|e| panic!("{e}"));
        (cert.pem(), key.serialize_pem())
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        path
    }
}

async fn https_agent(pki: &Pki, client_ca: bool) -> DevAgent {
    let (cert, key) = pki.leaf();
    DevAgent::start(DevAgentConfig {
        bind: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        tls: Some(DevAgentTls {
            cert_pem: cert.into_bytes(),
            key_pem: key.into_bytes(),
            client_ca_pem: client_ca.then(|| pki.ca.pem().into_bytes()),
        }),
        ..DevAgentConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

fn member() -> Member {
    Member {
        id: MemberId::new("m-1"),
        address: "127.0.0.1:7001".into(),
        kinds: vec!["K".into()],
        incarnation: 1,
    }
}

async fn register_and_list(agent: &DevAgent, tls: ConsulTls) -> Result<usize, String> {
    let provider = ConsulMembership::new(
        "https-test",
        ConsulConfig {
            address: agent.http_addr(),
            tls,
            request_timeout: Duration::from_secs(3),
            ..ConsulConfig::default()
        },
    )?;
    provider
        .register(&member())
        .await
        .map_err(|e| e.to_string())?;
    provider
        .keep_alive(&member().id)
        .await
        .map_err(|e| e.to_string())?;
    let snapshot = provider
        .members(None, Duration::from_secs(1))
        .await
        .map_err(|e| e.to_string())?;
    Ok(snapshot.members.len())
}

#[tokio::test]
async fn a_member_registers_with_an_https_agent_verified_by_its_ca_file() {
    let pki = Pki::new();
    let agent = https_agent(&pki, false).await;
    assert!(agent.http_addr().starts_with("https://"));
    let tls = ConsulTls {
        ca_file: Some(pki.ca_file()),
        ..ConsulTls::default()
    };
    assert_eq!(register_and_list(&agent, tls).await, Ok(1));
    agent.stop().await;
}

#[tokio::test]
async fn an_https_agent_whose_ca_is_not_trusted_is_refused_clearly() {
    let pki = Pki::new();
    let agent = https_agent(&pki, false).await;
    let other = Pki::new();
    let tls = ConsulTls {
        ca_file: Some(other.ca_file()),
        ..ConsulTls::default()
    };
    let err = register_and_list(&agent, tls)
        .await
        .err()
        .unwrap_or_default();
    assert!(err.contains("invalid peer certificate"), "{err}");
    // CONSUL_HTTP_SSL_VERIFY=false: anything goes, still encrypted.
    let tls = ConsulTls {
        verify: false,
        ..ConsulTls::default()
    };
    assert_eq!(register_and_list(&agent, tls).await, Ok(1));
    agent.stop().await;
}

#[tokio::test]
async fn an_agent_that_verifies_incoming_needs_the_client_certificate() {
    let pki = Pki::new();
    let agent = https_agent(&pki, true).await;
    let without = ConsulTls {
        ca_file: Some(pki.ca_file()),
        ..ConsulTls::default()
    };
    assert!(register_and_list(&agent, without.clone()).await.is_err());
    let (cert, key) = pki.leaf();
    let with = ConsulTls {
        client_cert: Some(pki.write("client.pem", &cert)),
        client_key: Some(pki.write("client-key.pem", &key)),
        ..without
    };
    assert_eq!(register_and_list(&agent, with).await, Ok(1));
    agent.stop().await;
}

#[tokio::test]
async fn unusable_tls_files_are_refused_before_any_request_naming_the_variable() {
    let pki = Pki::new();
    let config = |tls: ConsulTls| ConsulConfig {
        address: "https://127.0.0.1:8501".into(),
        tls,
        ..ConsulConfig::default()
    };
    let key_only = pki.write("key.pem", &pki.leaf().1);
    let cases = [
        (
            ConsulTls {
                ca_file: Some(key_only.clone()),
                ..ConsulTls::default()
            },
            "CONSUL_CACERT",
        ),
        (
            ConsulTls {
                ca_file: Some(pki.dir.path().join("missing.pem")),
                ..ConsulTls::default()
            },
            "CONSUL_CACERT",
        ),
        (
            ConsulTls {
                ca_path: Some(pki.dir.path().join("nowhere")),
                ..ConsulTls::default()
            },
            "CONSUL_CAPATH",
        ),
        (
            ConsulTls {
                client_cert: Some(pki.write("c.pem", &pki.leaf().0)),
                client_key: Some(key_only),
                ..ConsulTls::default()
            },
            "does not match",
        ),
    ];
    for (tls, named) in cases {
        let err = config(tls.clone()).validate().err().unwrap_or_default();
        assert!(err.contains(named), "{tls:?}: {err}");
    }
    // Over plain http, the TLS files are not read at all.
    let plain = ConsulConfig {
        address: "http://127.0.0.1:8500".into(),
        tls: ConsulTls {
            ca_file: Some(pki.dir.path().join("missing.pem")),
            ..ConsulTls::default()
        },
        ..ConsulConfig::default()
    };
    assert!(plain.validate().is_ok());
}
