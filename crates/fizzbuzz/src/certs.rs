//! `fizzbuzz certs`: a CA and one member certificate it signs, for TLS between members
//! on a laptop, in `docker compose` or in a test cluster (production clusters usually
//! have their own CA, cert-manager for one).

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::AppError;

/// Options of `fizzbuzz certs`.
#[derive(clap::Args, Clone, Debug)]
pub struct CertsArgs {
    /// Where to write ca.pem, member.pem and member-key.pem (created if missing).
    #[arg(long, default_value = "certs")]
    pub dir: PathBuf,
    /// A host the member certificate names: a DNS name (`*.fizz.svc` allowed) or an
    /// IP (repeatable). Every member's advertised host must be one of them.
    #[arg(long = "host", default_values_t = ["127.0.0.1".to_string(), "localhost".to_string()])]
    pub hosts: Vec<String>,
    /// Days the certificates are valid.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
    /// Replace files that exist.
    #[arg(long)]
    pub force: bool,
}

/// Writes the CA and the member certificate; returns what it wrote, for the user.
pub fn certs(args: &CertsArgs) -> Result<String, AppError> {
    let failed = |what: &str, e: rcgen::Error| AppError::Failed(format!("{what}: {e}"));
    let mut sans = Vec::new();
    for host in &args.hosts {
        sans.push(match host.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) if is_dns_name(host) => SanType::DnsName(
                host.as_str()
                    .try_into()
                    .map_err(|e| AppError::Usage(format!("--host {host:?}: {e}")))?,
            ),
            Err(_) => {
                return Err(AppError::Usage(format!(
                    "--host {host:?} is neither an IP address nor a DNS name \
                     (letters, digits, '-' and '.', optionally starting with '*.')"
                )));
            }
        });
    }
    let now = time_now();
    let until = now + std::time::Duration::from_secs(u64::from(args.days) * 86_400);

    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "fizzbuzz members CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now.into();
    ca.not_after = until.into();
    let ca_key = KeyPair::generate().map_err(|e| failed("a CA key", e))?;
    let ca = CertifiedIssuer::self_signed(ca, ca_key).map_err(|e| failed("the CA", e))?;

    let mut member = CertificateParams::default();
    member.subject_alt_names = sans;
    member
        .distinguished_name
        .push(DnType::CommonName, "fizzbuzz member");
    member.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    member.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    member.not_before = now.into();
    member.not_after = until.into();
    let key = KeyPair::generate().map_err(|e| failed("a member key", e))?;
    let cert = member
        .signed_by(&key, &ca)
        .map_err(|e| failed("the member certificate", e))?;

    std::fs::create_dir_all(&args.dir)
        .map_err(|e| AppError::Failed(format!("--dir {}: {e}", args.dir.display())))?;
    let files = [
        ("ca.pem", ca.pem(), false),
        ("member.pem", cert.pem(), false),
        ("member-key.pem", key.serialize_pem(), true),
    ];
    for (name, _, _) in &files {
        let path = args.dir.join(name);
        if path.exists() && !args.force {
            return Err(AppError::Usage(format!(
                "{} exists (--force replaces it)",
                path.display()
            )));
        }
    }
    for (name, pem, secret) in &files {
        write(&args.dir.join(name), pem.as_bytes(), *secret)?;
    }
    let d = args.dir.display();
    Ok(format!(
        "wrote {d}/ca.pem, {d}/member.pem and {d}/member-key.pem (naming {}; valid {} days)\n\
         use: --tls-cert {d}/member.pem --tls-key {d}/member-key.pem --tls-ca {d}/ca.pem\n",
        args.hosts.join(", "),
        args.days
    ))
}

/// Writes `bytes` to `path`; a secret is readable by its owner only.
fn write(path: &Path, bytes: &[u8], secret: bool) -> Result<(), AppError> {
    let cannot = |e: std::io::Error| AppError::Failed(format!("{}: {e}", path.display()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(cannot)?;
    file.write_all(bytes).map_err(cannot)
}

/// Now, a minute back (clocks of containers and hosts differ a little).
fn time_now() -> std::time::SystemTime {
    std::time::SystemTime::now() - std::time::Duration::from_secs(60)
}

/// A DNS name a certificate can hold: labels of letters, digits and '-', the first
/// one possibly `*`.
fn is_dns_name(host: &str) -> bool {
    let name = host.strip_prefix("*.").unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}
