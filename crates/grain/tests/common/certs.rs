//! Test certificates made with rcgen: a CA and member certificates it signs.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};

/// A certificate authority for tests.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A member's certificate (PEM) and key (PEM).
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let issuer = CertifiedIssuer::self_signed(params, key).unwrap_or_else(|e| panic!("{e}"));
        Self { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate naming `names` (IP addresses become IP subject alternative names).
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
        for n in names {
            params.subject_alt_names.push(match n.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().unwrap_or_else(|e| panic!("{e}"))),
            });
        }
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let cert = params
            .signed_by(&key, &self.issuer)
            .unwrap_or_else(|e| panic!("{e}"));
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}
