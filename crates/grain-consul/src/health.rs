//! Decoding the answer to `GET /v1/health/service/<cluster>` into members, one entry at
//! a time: an entry that is not a well-formed grain member is skipped (and reported),
//! never fatal to the rest of the snapshot. Only the fields the provider uses are read,
//! so unrelated fields (node metadata, checks, weights, …) can be anything.
//!
//! What an entry needs: `Service.ID` (a non-empty string); `Service.Port` (1–65535); an
//! address (`Service.Address`, or `Node.Address` when that is empty or absent);
//! `Service.Meta` with `member_id` equal to the ID and `incarnation` a decimal `u64`.
//! `Service.Tags` are the kinds it hosts; `null` or absent Tags mean no kinds (a client
//! member; Consul answers `null` for a service registered with no tags).

use grain::{Member, MemberId};
use serde_json::Value;

use crate::client::cut;
use crate::provider::meta;

/// An entry that was left out of the snapshot, and why.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Skipped {
    /// The service ID, or `(no ID)`.
    pub(crate) id: String,
    /// What is wrong with it.
    pub(crate) problem: String,
}

/// How much of a bad value a problem quotes, in bytes.
const MAX_QUOTED: usize = 80;

fn quoted(v: Option<&Value>) -> String {
    match v {
        None => "absent".into(),
        Some(v) => cut(&v.to_string(), MAX_QUOTED),
    }
}

/// The members of a health answer, and the entries skipped. `Err` only when the answer
/// as a whole is not a JSON array.
pub(crate) fn members_of(body: &[u8]) -> Result<(Vec<Member>, Vec<Skipped>), String> {
    let entries: Vec<Value> = serde_json::from_slice(body)
        .map_err(|e| format!("cannot decode Consul's health answer: {e}"))?;
    let mut members = Vec::with_capacity(entries.len());
    let mut skipped = Vec::new();
    for entry in &entries {
        match member_of(entry) {
            Ok(m) => members.push(m),
            Err(s) => skipped.push(s),
        }
    }
    Ok((members, skipped))
}

/// One entry as a member.
pub(crate) fn member_of(entry: &Value) -> Result<Member, Skipped> {
    let service = entry.get("Service").filter(|s| s.is_object());
    let id = service
        .and_then(|s| s.get("ID"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let skip = |problem: String| Skipped {
        id: if id.is_empty() {
            "(no ID)".into()
        } else {
            cut(id, MAX_QUOTED)
        },
        problem,
    };
    let Some(service) = service else {
        return Err(skip(format!(
            "Service is {}, not an object",
            quoted(entry.get("Service"))
        )));
    };
    if id.is_empty() {
        return Err(skip(format!(
            "Service.ID is {}, not a non-empty string",
            quoted(service.get("ID"))
        )));
    }
    let kinds = match service.get("Tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(tags)) => tags
            .iter()
            .map(|t| t.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                skip(format!(
                    "Tags {} is not a list of strings",
                    quoted(service.get("Tags"))
                ))
            })?,
        Some(other) => {
            return Err(skip(format!(
                "Tags {} is not a list of strings",
                quoted(Some(other))
            )));
        }
    };
    let port = service
        .get("Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            skip(format!(
                "Port {} is not a port (1-65535)",
                quoted(service.get("Port"))
            ))
        })?;
    let host = match service.get("Address") {
        None | Some(Value::Null) => "",
        Some(Value::String(a)) => a.as_str(),
        Some(other) => {
            return Err(skip(format!(
                "Service.Address {} is not a string",
                quoted(Some(other))
            )));
        }
    };
    let host = if host.is_empty() {
        entry
            .get("Node")
            .and_then(|n| n.get("Address"))
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| {
                skip(format!(
                    "no address: Service.Address is empty and Node.Address is {}",
                    quoted(entry.get("Node").and_then(|n| n.get("Address")))
                ))
            })?
    } else {
        host
    };
    let Some(Value::Object(m)) = service.get("Meta") else {
        return Err(skip(format!(
            "Meta is {}, not an object with {} and {}: not registered by grain",
            quoted(service.get("Meta")),
            meta::MEMBER_ID,
            meta::INCARNATION
        )));
    };
    if m.get(meta::MEMBER_ID).and_then(Value::as_str) != Some(id) {
        return Err(skip(format!(
            "Meta.{} is {}, not the service ID",
            meta::MEMBER_ID,
            quoted(m.get(meta::MEMBER_ID))
        )));
    }
    let incarnation = m
        .get(meta::INCARNATION)
        .and_then(Value::as_str)
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| {
            skip(format!(
                "Meta.{} is {}, not a decimal u64",
                meta::INCARNATION,
                quoted(m.get(meta::INCARNATION))
            ))
        })?;
    Ok(Member {
        id: MemberId::new(id),
        address: join_address(host, port),
        kinds,
        incarnation,
    })
}

/// `host:port`, with brackets around an IPv6 host.
pub(crate) fn join_address(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good(id: &str) -> Value {
        json!({
            "Node": {"Node": "n1", "Address": "10.0.0.1"},
            "Service": {
                "ID": id, "Service": "c", "Tags": ["Fizz"], "Address": "127.0.0.1", "Port": 7000,
                "Meta": {"member_id": id, "cluster": "c", "incarnation": "3"}
            },
            "Checks": []
        })
    }

    fn with(id: &str, pointer: &str, value: Value) -> Value {
        let mut e = good(id);
        if let Some(slot) = e.pointer_mut(pointer) {
            *slot = value;
        }
        e
    }

    fn without(id: &str, field: &str) -> Value {
        let mut e = good(id);
        if let Some(s) = e.get_mut("Service").and_then(Value::as_object_mut) {
            s.remove(field);
        }
        e
    }

    #[test]
    fn a_well_formed_entry_is_a_member() {
        let m = member_of(&good("m1")).unwrap_or_else(|s| panic!("{s:?}"));
        assert_eq!(m.id.as_str(), "m1");
        assert_eq!(m.address, "127.0.0.1:7000");
        assert_eq!(m.kinds, vec!["Fizz".to_string()]);
        assert_eq!(m.incarnation, 3);
    }

    #[test]
    fn null_or_absent_tags_mean_a_member_that_hosts_no_kinds() {
        for e in [
            with("m1", "/Service/Tags", Value::Null),
            without("m1", "Tags"),
        ] {
            let m = member_of(&e).unwrap_or_else(|s| panic!("{s:?}"));
            assert!(m.kinds.is_empty());
        }
    }

    #[test]
    fn an_empty_service_address_falls_back_to_the_node_address() {
        for e in [
            with("m1", "/Service/Address", json!("")),
            with("m1", "/Service/Address", Value::Null),
            without("m1", "Address"),
        ] {
            let m = member_of(&e).unwrap_or_else(|s| panic!("{s:?}"));
            assert_eq!(m.address, "10.0.0.1:7000");
        }
        let e = with("m1", "/Service/Address", json!("::1"));
        assert_eq!(member_of(&e).map(|m| m.address), Ok("[::1]:7000".into()));
    }

    #[test]
    fn a_malformed_entry_is_skipped_naming_its_id_and_what_is_wrong() {
        let node_less = {
            let mut e = with("m1", "/Service/Address", json!(""));
            e["Node"] = Value::Null;
            e
        };
        let table: Vec<(Value, &str, &str)> = vec![
            (json!(null), "(no ID)", "Service is absent"),
            (json!({"Service": null}), "(no ID)", "Service is null"),
            (
                with("m1", "/Service/ID", json!(7)),
                "(no ID)",
                "Service.ID is 7",
            ),
            (
                with("m1", "/Service/ID", json!("")),
                "(no ID)",
                "Service.ID",
            ),
            (
                with("m1", "/Service/Tags", json!("Fizz")),
                "m1",
                "Tags \"Fizz\"",
            ),
            (with("m1", "/Service/Tags", json!([1])), "m1", "Tags [1]"),
            (
                with("m1", "/Service/Meta", Value::Null),
                "m1",
                "Meta is null",
            ),
            (without("m1", "Meta"), "m1", "Meta is absent"),
            (
                with("m1", "/Service/Meta", json!({})),
                "m1",
                "member_id is absent",
            ),
            (
                with("m1", "/Service/Meta/member_id", json!("m2")),
                "m1",
                "member_id is \"m2\"",
            ),
            (
                with("m1", "/Service/Meta/incarnation", json!("-1")),
                "m1",
                "incarnation is \"-1\"",
            ),
            (with("m1", "/Service/Port", Value::Null), "m1", "Port null"),
            (with("m1", "/Service/Port", json!(0)), "m1", "Port 0"),
            (
                with("m1", "/Service/Port", json!(70000)),
                "m1",
                "Port 70000",
            ),
            (with("m1", "/Service/Port", json!(-1)), "m1", "Port -1"),
            (
                with("m1", "/Service/Port", json!("7000")),
                "m1",
                "Port \"7000\"",
            ),
            (with("m1", "/Service/Address", json!(1)), "m1", "Address 1"),
            (node_less, "m1", "Node.Address is absent"),
        ];
        for (entry, id, problem) in table {
            match member_of(&entry) {
                Ok(m) => panic!("{entry} decoded as {m:?}"),
                Err(s) => {
                    assert_eq!(s.id, id, "{entry}");
                    assert!(s.problem.contains(problem), "{entry}: {}", s.problem);
                }
            }
        }
    }

    #[test]
    fn one_malformed_entry_leaves_the_rest_of_the_snapshot() {
        let body = json!([
            good("m1"),
            with("m2", "/Service/Meta", Value::Null),
            "garbage",
            with("m3", "/Service/Tags", Value::Null),
        ])
        .to_string();
        let (members, skipped) = members_of(body.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["m1", "m3"]);
        let skipped_ids: Vec<&str> = skipped.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(skipped_ids, ["m2", "(no ID)"]);
        assert!(members_of(b"{}").is_err());
        assert!(members_of(b"[").is_err());
    }

    #[test]
    fn a_huge_bad_value_is_quoted_cut() {
        let long = "é".repeat(1000);
        let s = member_of(&with("m1", "/Service/Tags", json!(long)))
            .err()
            .unwrap_or_else(|| panic!("decoded"));
        assert!(s.problem.len() < 200, "{}", s.problem);
    }
}
