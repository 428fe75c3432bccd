//! [`ConsulMembership`]: the membership provider over Consul's agent HTTP API.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use grain::membership::{MemberSnapshot, MembershipError, MembershipProvider};
use grain::{Member, MemberId};
use http::{Method, StatusCode};

use crate::api::{self, CheckDefinition, ServiceRegistration};
use crate::client::{ConsulClient, ConsulError, encode};
use crate::config::{ConsulConfig, base_url};
use crate::health::{self, Skipped};

/// Metadata keys a member registers.
pub mod meta {
    /// The member id.
    pub const MEMBER_ID: &str = "member_id";
    /// The cluster name.
    pub const CLUSTER: &str = "cluster";
    /// The member's role.
    pub const ROLE: &str = "role";
    /// The software version.
    pub const VERSION: &str = "version";
    /// The member's incarnation.
    pub const INCARNATION: &str = "incarnation";
}

/// Membership through a Consul agent.
///
/// Each member is an instance of the Consul service named after the cluster: `ID` = the
/// member id, `Tags` = the kinds it hosts, `Meta` = member id, cluster, role, version and
/// incarnation, `Address`/`Port` = its gRPC endpoint, with a TTL check
/// `service:<member id>` that [`MembershipProvider::keep_alive`] passes. The topology is
/// watched with blocking queries on `/v1/health/service/<cluster>?passing`.
///
/// An entry of that answer that is not a well-formed member (say `null` Meta: a service
/// of the same name not registered by grain, or a bad port) is left out of the snapshot
/// with a warning naming its ID and what is wrong, logged once while the problem lasts;
/// the other entries still count. `null` Tags mean a member that hosts no kinds.
#[derive(Clone, Debug)]
pub struct ConsulMembership {
    client: ConsulClient,
    service: String,
    config: ConsulConfig,
    /// The entries skipped from the last snapshot, so a lasting problem is logged once.
    skipped: Arc<Mutex<HashSet<Skipped>>>,
}

impl std::fmt::Debug for ConsulClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulClient")
            .field("base", &self.base())
            .finish_non_exhaustive()
    }
}

/// The longest blocking query Consul serves, in seconds.
const MAX_WAIT_SECS: u64 = 600;

fn check_id(member: &str) -> String {
    format!("service:{member}")
}

fn not_registered_body(body: &str) -> bool {
    let b = body.to_ascii_lowercase();
    b.contains("unknown check")
        || b.contains("does not have associated ttl")
        || b.contains("unknown service")
}

impl ConsulMembership {
    /// A provider for the cluster `cluster` (the Consul service name).
    pub fn new(cluster: &str, config: ConsulConfig) -> Result<Self, String> {
        config.validate()?;
        if cluster.is_empty() {
            return Err("cluster name must not be empty".into());
        }
        let base = base_url(&config.address, config.tls.https)?;
        Ok(Self {
            client: ConsulClient::new(base, config.token.clone(), &config.tls)?,
            service: cluster.to_string(),
            config,
            skipped: Arc::default(),
        })
    }

    /// Logs the skipped entries not already skipped from the previous snapshot.
    fn report_skipped(&self, skipped: Vec<Skipped>) {
        let now: HashSet<Skipped> = skipped.into_iter().collect();
        let mut before = self.skipped.lock().unwrap_or_else(|p| p.into_inner());
        for s in now.difference(&before) {
            tracing::warn!(
                service = %self.service,
                id = %s.id,
                problem = %s.problem,
                "skipping a Consul health entry that is not a well-formed grain member"
            );
        }
        *before = now;
    }

    /// The agent's base URL.
    pub fn address(&self) -> &str {
        self.client.base()
    }

    fn dc_param(&self) -> String {
        self.config
            .datacenter
            .as_ref()
            .map(|dc| format!("&dc={}", encode(dc)))
            .unwrap_or_default()
    }

    fn registration(&self, member: &Member) -> Result<ServiceRegistration, MembershipError> {
        let (host, port) = split_address(&member.address).ok_or_else(|| {
            MembershipError::Rejected(format!(
                "member address {:?} is not host:port",
                member.address
            ))
        })?;
        let meta: HashMap<String, String> = [
            (meta::MEMBER_ID, member.id.to_string()),
            (meta::CLUSTER, self.service.clone()),
            (meta::ROLE, self.config.role.clone()),
            (meta::VERSION, self.config.version.clone()),
            (meta::INCARNATION, member.incarnation.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Ok(ServiceRegistration {
            id: Some(member.id.to_string()),
            name: self.service.clone(),
            tags: Some(member.kinds.clone()),
            address: Some(host),
            port: Some(port),
            meta: Some(meta),
            check: Some(CheckDefinition {
                check_id: Some(check_id(member.id.as_str())),
                name: Some(format!("grain member {} alive", member.id)),
                ttl: Some(api::format_go_duration(self.config.ttl)),
                status: Some("passing".into()),
                deregister_critical_service_after: Some(api::format_go_duration(
                    self.config.deregister_critical_after,
                )),
                ..CheckDefinition::default()
            }),
            checks: None,
        })
    }
}

/// `host:port` → (host without brackets, port).
fn split_address(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_string(), port))
}

fn membership_error(e: ConsulError) -> MembershipError {
    match e {
        ConsulError::Unreachable { .. } => MembershipError::Unavailable(e.to_string()),
        ConsulError::Status { status, .. } if status == StatusCode::FORBIDDEN => {
            MembershipError::Rejected(format!("{e} (check CONSUL_HTTP_TOKEN)"))
        }
        ConsulError::Status { status, .. }
            if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS =>
        {
            MembershipError::Unavailable(e.to_string())
        }
        ConsulError::Status { .. } => MembershipError::Rejected(e.to_string()),
        ConsulError::Decode { .. } => MembershipError::Unavailable(e.to_string()),
        ConsulError::InvalidRequest(_) => MembershipError::Rejected(e.to_string()),
    }
}

#[async_trait]
impl MembershipProvider for ConsulMembership {
    async fn register(&self, member: &Member) -> Result<(), MembershipError> {
        let body = serde_json::to_vec(&self.registration(member)?)
            .map_err(|e| MembershipError::Rejected(format!("cannot encode registration: {e}")))?;
        self.client
            .send(
                Method::PUT,
                "/v1/agent/service/register?replace-existing-checks=true",
                Some(body),
                self.config.request_timeout,
            )
            .await
            .map(|_| ())
            .map_err(membership_error)
    }

    async fn keep_alive(&self, member: &MemberId) -> Result<(), MembershipError> {
        let path = format!(
            "/v1/agent/check/pass/{}",
            encode(&check_id(member.as_str()))
        );
        match self
            .client
            .send(Method::PUT, &path, None, self.config.request_timeout)
            .await
        {
            Ok(_) => Ok(()),
            Err(ConsulError::Status { status, body, .. })
                if status == StatusCode::NOT_FOUND
                    || (status.is_server_error() && not_registered_body(&body)) =>
            {
                Err(MembershipError::NotRegistered(member.clone()))
            }
            Err(e) => Err(membership_error(e)),
        }
    }

    async fn members(
        &self,
        after: Option<u64>,
        wait: Duration,
    ) -> Result<MemberSnapshot, MembershipError> {
        let mut path = format!("/v1/health/service/{}?passing=1", encode(&self.service));
        let mut timeout = self.config.request_timeout;
        if let Some(index) = after {
            // Consul waits at most ten minutes, whatever it is asked.
            let secs = wait.as_secs().clamp(1, MAX_WAIT_SECS);
            path.push_str(&format!("&index={index}&wait={secs}s"));
            // Consul adds up to wait/16 of jitter.
            timeout = timeout.saturating_add(Duration::from_secs(secs + secs / 16 + 1));
        }
        path.push_str(&self.dc_param());
        let answer = self
            .client
            .send(Method::GET, &path, None, timeout)
            .await
            .map_err(membership_error)?;
        let index = answer
            .headers
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| {
                MembershipError::Unavailable("Consul's answer has no valid X-Consul-Index".into())
            })?;
        let (members, skipped) =
            health::members_of(&answer.body).map_err(MembershipError::Unavailable)?;
        self.report_skipped(skipped);
        Ok(MemberSnapshot {
            index: index.max(1),
            members,
        })
    }

    async fn deregister(&self, member: &MemberId) -> Result<(), MembershipError> {
        let path = format!("/v1/agent/service/deregister/{}", encode(member.as_str()));
        match self
            .client
            .send(Method::PUT, &path, None, self.config.request_timeout)
            .await
        {
            Ok(_) => Ok(()),
            Err(ConsulError::Status { status, .. }) if status == StatusCode::NOT_FOUND => Ok(()),
            Err(e) => Err(membership_error(e)),
        }
    }

    fn keep_alive_interval(&self) -> Duration {
        self.config.keep_alive_interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_and_join_with_ipv6_brackets() {
        assert_eq!(
            split_address("127.0.0.1:7000"),
            Some(("127.0.0.1".into(), 7000))
        );
        assert_eq!(split_address("[::1]:7000"), Some(("::1".into(), 7000)));
        assert_eq!(split_address("fizz:0"), None);
        assert_eq!(split_address("fizz"), None);
        assert_eq!(health::join_address("::1", 7000), "[::1]:7000");
        assert_eq!(health::join_address("fizz", 7000), "fizz:7000");
    }

    #[test]
    fn errors_map_to_what_the_runtime_can_act_on() {
        let status = |s: u16| ConsulError::Status {
            status: StatusCode::from_u16(s).unwrap_or(StatusCode::IM_A_TEAPOT),
            what: "PUT x".into(),
            body: "b".into(),
        };
        assert!(matches!(
            membership_error(status(503)),
            MembershipError::Unavailable(_)
        ));
        assert!(matches!(
            membership_error(status(429)),
            MembershipError::Unavailable(_)
        ));
        assert!(
            matches!(membership_error(status(403)), MembershipError::Rejected(m) if m.contains("CONSUL_HTTP_TOKEN"))
        );
        assert!(matches!(
            membership_error(status(400)),
            MembershipError::Rejected(_)
        ));
    }
}
