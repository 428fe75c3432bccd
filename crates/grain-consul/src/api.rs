//! The JSON shapes of the part of Consul's HTTP API we use, shared by the client and
//! the dev agent. Field names are Consul's (PascalCase); unknown fields are ignored.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Body of `PUT /v1/agent/service/register`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceRegistration {
    /// The service instance id (defaults to `Name`).
    #[serde(rename = "ID", default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The service name.
    pub name: String,
    /// Tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// The address (empty: the node's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<HashMap<String, String>>,
    /// One check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckDefinition>,
    /// Several checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Vec<CheckDefinition>>,
}

/// A check inside a service registration (only TTL checks are used here).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct CheckDefinition {
    /// The check id (default `service:<service id>`).
    #[serde(rename = "CheckID", default, skip_serializing_if = "Option::is_none")]
    pub check_id: Option<String>,
    /// A name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Time to live, a Go duration (`3s`).
    #[serde(rename = "TTL", default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Initial status (`passing`, `warning`, `critical`; default `critical`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Deregister the service after the check has been critical this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deregister_critical_service_after: Option<String>,
    /// Notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// An HTTP check URL (not supported by the dev agent).
    #[serde(rename = "HTTP", default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// A TCP check address (not supported by the dev agent).
    #[serde(rename = "TCP", default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    /// A gRPC check address (not supported by the dev agent).
    #[serde(rename = "GRPC", default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<String>,
}

/// Body of `PUT /v1/agent/check/update/:id`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct CheckUpdate {
    /// `passing`, `warning` or `critical`.
    pub status: String,
    /// Output shown with the check.
    #[serde(default)]
    pub output: String,
}

/// A node, as in health and catalog answers.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    /// Node id (a UUID).
    #[serde(rename = "ID", default)]
    pub id: String,
    /// Node name.
    pub node: String,
    /// Node address.
    pub address: String,
    /// Datacenter.
    #[serde(default)]
    pub datacenter: String,
    /// Tagged addresses.
    #[serde(default, deserialize_with = "null_as_default")]
    pub tagged_addresses: HashMap<String, String>,
    /// Metadata.
    #[serde(default, deserialize_with = "null_as_default")]
    pub meta: HashMap<String, String>,
    /// Raft index of creation.
    #[serde(default)]
    pub create_index: u64,
    /// Raft index of the last change.
    #[serde(default)]
    pub modify_index: u64,
}

/// A service instance, as in health answers and `/v1/agent/services`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct AgentService {
    /// Instance id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Service name.
    pub service: String,
    /// Tags.
    #[serde(default, deserialize_with = "null_as_default")]
    pub tags: Vec<String>,
    /// Address (empty: the node's).
    #[serde(default)]
    pub address: String,
    /// Metadata.
    #[serde(default, deserialize_with = "null_as_default")]
    pub meta: HashMap<String, String>,
    /// Port.
    #[serde(default)]
    pub port: u16,
    /// Weights.
    #[serde(default)]
    pub weights: Weights,
    /// Whether tags may be overridden by the catalog.
    #[serde(default)]
    pub enable_tag_override: bool,
    /// Datacenter.
    #[serde(default)]
    pub datacenter: String,
    /// Raft index of creation.
    #[serde(default)]
    pub create_index: u64,
    /// Raft index of the last change.
    #[serde(default)]
    pub modify_index: u64,
}

/// DNS weights of a service instance.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Weights {
    /// Weight when passing.
    pub passing: u32,
    /// Weight when warning.
    pub warning: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            passing: 1,
            warning: 1,
        }
    }
}

/// A health check's state.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheck {
    /// Node name.
    pub node: String,
    /// Check id.
    #[serde(rename = "CheckID")]
    pub check_id: String,
    /// Name.
    pub name: String,
    /// `passing`, `warning` or `critical`.
    pub status: String,
    /// Notes.
    #[serde(default)]
    pub notes: String,
    /// Last output.
    #[serde(default)]
    pub output: String,
    /// The service it belongs to (empty for node checks).
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
    /// The service's name.
    #[serde(default)]
    pub service_name: String,
    /// The service's tags.
    #[serde(default, deserialize_with = "null_as_default")]
    pub service_tags: Vec<String>,
    /// `ttl`, or empty for node checks.
    #[serde(rename = "Type", default)]
    pub kind: String,
    /// Raft index of creation.
    #[serde(default)]
    pub create_index: u64,
    /// Raft index of the last change.
    #[serde(default)]
    pub modify_index: u64,
}

/// One entry of `GET /v1/health/service/:name`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceEntry {
    /// The node.
    pub node: Node,
    /// The service instance.
    pub service: AgentService,
    /// The node's and the instance's checks.
    #[serde(default, deserialize_with = "null_as_default")]
    pub checks: Vec<HealthCheck>,
}

/// Consul encodes an empty list or map as `null` (a Go nil slice or map): decode it,
/// like an absent field, as the empty value.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

/// Parses a Go duration (`300ms`, `1.5s`, `1m30s`, `2h`).
pub fn parse_go_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(std::time::Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    let mut any = false;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * scale;
        any = true;
    }
    // Anything over ten years is a typo, not a duration (and would overflow clocks).
    const MAX_SECS: f64 = 10.0 * 365.0 * 86_400.0;
    if !(any && total.is_finite() && (0.0..=MAX_SECS).contains(&total)) {
        return None;
    }
    std::time::Duration::try_from_secs_f64(total).ok()
}

/// Formats a duration as a Go duration Consul accepts (`1500ms`, `3s`).
pub fn format_go_duration(d: std::time::Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis().max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn go_durations_parse_like_go() {
        let table: &[(&str, Option<Duration>)] = &[
            ("3s", Some(Duration::from_secs(3))),
            ("300ms", Some(Duration::from_millis(300))),
            ("1m30s", Some(Duration::from_secs(90))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("2h", Some(Duration::from_secs(7200))),
            ("10us", Some(Duration::from_micros(10))),
            ("0", Some(Duration::ZERO)),
            ("", None),
            ("5", None),
            ("s", None),
            ("3x", None),
            ("99999999999999999999h", None),
            ("1e400s", None),
        ];
        for (text, want) in table {
            assert_eq!(parse_go_duration(text), *want, "{text:?}");
        }
    }

    #[test]
    fn formatted_durations_parse_back() {
        for d in [
            Duration::from_secs(3),
            Duration::from_millis(1500),
            Duration::from_secs(60),
        ] {
            assert_eq!(parse_go_duration(&format_go_duration(d)), Some(d));
        }
    }

    #[test]
    fn consul_nulls_for_empty_lists_and_maps_decode_as_empty() {
        let json = r#"{
            "Node": {"Node": "n1", "Address": "10.0.0.1", "TaggedAddresses": null, "Meta": null},
            "Service": {"ID": "m1", "Service": "c", "Tags": null, "Meta": null, "Port": 7000},
            "Checks": null
        }"#;
        let e: ServiceEntry = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"));
        assert!(e.service.tags.is_empty() && e.service.meta.is_empty() && e.checks.is_empty());
        assert!(e.node.tagged_addresses.is_empty() && e.node.meta.is_empty());
        let c: HealthCheck = serde_json::from_str(
            r#"{"Node":"n1","CheckID":"x","Name":"x","Status":"passing","ServiceTags":null}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(c.service_tags.is_empty());
    }

    #[test]
    fn registration_serializes_with_consul_field_names() {
        let r = ServiceRegistration {
            id: Some("m1".into()),
            name: "c".into(),
            check: Some(CheckDefinition {
                ttl: Some("3s".into()),
                ..CheckDefinition::default()
            }),
            ..ServiceRegistration::default()
        };
        let json = serde_json::to_string(&r).unwrap_or_default();
        assert_eq!(json, r#"{"ID":"m1","Name":"c","Check":{"TTL":"3s"}}"#);
    }
}
