//! Writes the seed corpus: `cargo run --example seeds` in fuzz/ (re)writes
//! `corpus/<target>/seed-*`. The wire messages are declared here by hand after
//! `proto/grain/v1/remote.proto` (same field numbers), so a seed is what a member
//! really writes.

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message;

#[derive(Clone, PartialEq, Message)]
struct RequestBatch {
    #[prost(message, repeated, tag = "1")]
    requests: Vec<Request>,
    #[prost(bool, tag = "2")]
    leaving_seen: bool,
}

#[derive(Clone, PartialEq, Message)]
struct Request {
    #[prost(uint64, tag = "1")]
    correlation_id: u64,
    #[prost(string, tag = "2")]
    kind: String,
    #[prost(string, tag = "3")]
    identity: String,
    #[prost(string, tag = "4")]
    method: String,
    #[prost(bytes = "vec", tag = "5")]
    payload: Vec<u8>,
    // A BTreeMap, so that the seeds are the same bytes on every run.
    #[prost(btree_map = "string, string", tag = "6")]
    headers: BTreeMap<String, String>,
    #[prost(uint64, tag = "7")]
    timeout_micros: u64,
}

#[derive(Clone, PartialEq, Message)]
struct ResponseBatch {
    #[prost(message, repeated, tag = "1")]
    responses: Vec<Response>,
    #[prost(bool, tag = "2")]
    leaving: bool,
}

#[derive(Clone, PartialEq, Message)]
struct Response {
    #[prost(uint64, tag = "1")]
    correlation_id: u64,
    #[prost(oneof = "Outcome", tags = "2, 3")]
    result: Option<Outcome>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Outcome {
    #[prost(bytes = "vec", tag = "2")]
    Payload(Vec<u8>),
    #[prost(message, tag = "3")]
    Failure(Failure),
}

#[derive(Clone, PartialEq, Message)]
struct Failure {
    #[prost(int32, tag = "1")]
    reason: i32,
    #[prost(int32, tag = "2")]
    code: i32,
    #[prost(string, tag = "3")]
    message: String,
}

/// `google.protobuf.Struct` with one string field, as the `Decode` method reads.
fn a_struct() -> Vec<u8> {
    // Struct { fields: { "n": Value { string_value: "fizz" } } }
    let value = [0x1a, 4, b'f', b'i', b'z', b'z'];
    let mut entry = vec![0x0a, 1, b'n', 0x12, value.len() as u8];
    entry.extend_from_slice(&value);
    let mut s = vec![0x0a, entry.len() as u8];
    s.extend_from_slice(&entry);
    s
}

fn request(id: u64, kind: &str, identity: &str, method: &str, payload: &[u8]) -> Request {
    Request {
        correlation_id: id,
        kind: kind.into(),
        identity: identity.into(),
        method: method.into(),
        payload: payload.to_vec(),
        headers: BTreeMap::new(),
        timeout_micros: 5_000_000,
    }
}

fn request_batches() -> Vec<Vec<u8>> {
    let traced = {
        let mut r = request(7, "Fuzz", "grain1", "fuzz.v1.Fuzz/Sleep", &[0, 0, 0, 20]);
        r.headers.insert(
            "traceparent".into(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        );
        r.headers.insert("tracestate".into(), "vendor=value".into());
        r.headers
            .insert("baggage".into(), "user=alice,tenant=t1".into());
        r
    };
    let batches = [
        RequestBatch {
            requests: vec![request(1, "Fuzz", "grain1", "fuzz.v1.Fuzz/Echo", b"hello")],
            leaving_seen: false,
        },
        RequestBatch {
            requests: vec![
                request(1, "Fuzz", "grain1", "fuzz.v1.Fuzz/Decode", &a_struct()),
                request(
                    2,
                    "Fuzz",
                    "grain2",
                    "fuzz.v1.Fuzz/Fail",
                    b"\x03bad argument",
                ),
                request(3, "Flaky", "xgrain", "fuzz.v1.Fuzz/Echo", b""),
                request(4, "Nope", "grain1", "fuzz.v1.Fuzz/Echo", b""),
                request(5, "Fuzz", "grain1", "fuzz.v1.Other/Method", b""),
            ],
            leaving_seen: true,
        },
        RequestBatch {
            requests: vec![traced],
            leaving_seen: false,
        },
        RequestBatch {
            // A deadline shorter than the grain's sleep: answered Timeout.
            requests: vec![Request {
                timeout_micros: 1_000,
                ..request(9, "Fuzz", "grain3", "fuzz.v1.Fuzz/Sleep", &[0, 0, 1, 0])
            }],
            leaving_seen: false,
        },
        RequestBatch {
            requests: vec![Request {
                timeout_micros: 0,
                ..request(1, "Flaky", "grain1", "fuzz.v1.Fuzz/Echo", b"x")
            }],
            leaving_seen: false,
        },
    ];
    batches.iter().map(Message::encode_to_vec).collect()
}

fn response_batches() -> Vec<Vec<u8>> {
    let failure = |reason: i32, code: i32, message: &str| Response {
        correlation_id: 2,
        result: Some(Outcome::Failure(Failure {
            reason,
            code,
            message: message.into(),
        })),
    };
    let batches = [
        ResponseBatch {
            responses: vec![Response {
                correlation_id: 1,
                result: Some(Outcome::Payload(b"Fizz".to_vec())),
            }],
            leaving: false,
        },
        ResponseBatch {
            responses: vec![
                failure(0, 3, "bad argument"),
                failure(1, 0, "wrong owner"),
                failure(2, 0, "member m1 hosts no grain kind Nope"),
                failure(3, 0, "shutting down"),
                failure(4, 0, "timed out"),
                failure(99, 99, "a reason from the future"),
            ],
            leaving: true,
        },
        ResponseBatch {
            responses: vec![Response {
                correlation_id: 3,
                result: None,
            }],
            leaving: false,
        },
        ResponseBatch {
            responses: Vec::new(),
            leaving: true,
        },
    ];
    batches.iter().map(Message::encode_to_vec).collect()
}

fn handshakes() -> Vec<Vec<u8>> {
    [
        "2\nfuzz\nfizz-1\n127.0.0.1:7001",
        "1\nfuzz\nfizz-1\n127.0.0.1:7001",
        "99\nfuzz\nfizz-1\n[::1]:7001",
        "\nfuzz\nfizz-1\n127.0.0.1:7001",
        "2\nanother-cluster\nfizz-1\n127.0.0.1:7001",
        " 2 \nfuzz",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn health_replies() -> Vec<Vec<u8>> {
    let entry = |id: &str, tags: serde_json::Value, address: &str, port: u64| {
        serde_json::json!({
            "Node": {
                "ID": "00000000-0000-4000-8000-000000000001", "Node": "grain-dev-agent",
                "Address": "127.0.0.1", "Datacenter": "dc1",
                "TaggedAddresses": {"lan": "127.0.0.1", "wan": "127.0.0.1"},
                "Meta": {"consul-network-segment": ""}, "CreateIndex": 1, "ModifyIndex": 1
            },
            "Service": {
                "ID": id, "Service": "fizzbuzz", "Tags": tags, "Address": address,
                "Meta": {"member_id": id, "cluster": "fizzbuzz", "incarnation": "1700000000000"},
                "Port": port, "Weights": {"Passing": 1, "Warning": 1},
                "EnableTagOverride": false, "Datacenter": "dc1", "CreateIndex": 12, "ModifyIndex": 12
            },
            "Checks": [{
                "Node": "grain-dev-agent", "CheckID": format!("service:{id}"), "Name": "grain TTL",
                "Status": "passing", "Notes": "", "Output": "", "ServiceID": id,
                "ServiceName": "fizzbuzz", "ServiceTags": tags, "Type": "ttl",
                "CreateIndex": 12, "ModifyIndex": 14
            }]
        })
    };
    let replies = [
        serde_json::json!([]),
        serde_json::json!([entry(
            "fizz-1",
            serde_json::json!(["FizzService"]),
            "127.0.0.1",
            7001
        )]),
        serde_json::json!([
            entry(
                "fizz-1",
                serde_json::json!(["FizzService"]),
                "127.0.0.1",
                7001
            ),
            entry("buzz-1", serde_json::json!(["BuzzService"]), "", 7002),
            entry("client-1", serde_json::Value::Null, "::1", 7003),
        ]),
        serde_json::json!([
            entry("bad-port", serde_json::json!(["X"]), "127.0.0.1", 0),
            {"Node": null, "Service": {"ID": "m", "Port": 1, "Meta": {"member_id": "m"}}, "Checks": null},
            "garbage"
        ]),
    ];
    replies.iter().map(|r| r.to_string().into_bytes()).collect()
}

fn go_durations() -> Vec<Vec<u8>> {
    [
        "3s",
        "300ms",
        "1m30s",
        "1.5s",
        "2h",
        "10us",
        "5µs",
        "0",
        "1h2m3.5s4ms",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// `traceparent`, then `\n` and `tracestate`: the recommendation's examples, a later
/// version, and near misses.
fn trace_contexts() -> Vec<Vec<u8>> {
    [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00\nrojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03\nvendor@tenant=x, other=y",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\t\na=b,,c=d,=e",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn dev_agent_requests() -> Vec<Vec<u8>> {
    let auth = "X-Consul-Token: fuzz-token";
    let register = format!(
        "PUT /v1/agent/service/register?replace-existing-checks=1\n{auth}\n\n{}",
        serde_json::json!({
            "ID": "fizz-1", "Name": "fizzbuzz", "Tags": ["FizzService"], "Address": "127.0.0.1",
            "Port": 7001, "Meta": {"member_id": "fizz-1", "cluster": "fizzbuzz", "incarnation": "1"},
            "Check": {"CheckID": "service:fizz-1", "TTL": "3s", "Status": "passing",
                      "DeregisterCriticalServiceAfter": "1m"}
        })
    );
    let register_snake = format!(
        "PUT /v1/agent/service/register\nAuthorization: Bearer fuzz-token\n\n{}",
        serde_json::json!({
            "id": "buzz-1", "name": "fizzbuzz", "port": 7002,
            "checks": [{"ttl": "1s", "deregister_critical_service_after": "1s"},
                       {"CheckID": "extra", "TTL": "10s", "Status": "warning"}]
        })
    );
    let update = format!(
        "PUT /v1/agent/check/update/service:fizz-1?token=fuzz-token\n\n{}",
        serde_json::json!({"Status": "critical", "Output": "down"})
    );
    let sep = "\n###\n";
    let requests = [
        register.clone(),
        [
            register.clone(),
            format!("GET /v1/health/service/fizzbuzz?passing=1&dc=dc1\n{auth}"),
            format!("GET /v1/health/service/fizzbuzz?index=3&wait=5s\n{auth}"),
            format!("PUT /v1/agent/check/pass/service:fizz-1?note=ok\n{auth}"),
            update,
            format!("GET /v1/health/service/fizzbuzz?passing=false&index=1&wait=0\n{auth}"),
            format!("PUT /v1/agent/service/deregister/fizz-1\n{auth}"),
        ]
        .join(sep),
        [
            register_snake,
            format!("GET /v1/agent/services\n{auth}"),
            format!("GET /v1/catalog/services?dc=dc2\n{auth}"),
            "GET /v1/status/leader".to_string(),
            format!("PUT /v1/agent/check/fail/service:buzz-1\n{auth}"),
            format!("GET /v1/health/service/fizzbuzz?wait=10m&index=99\n{auth}"),
        ]
        .join(sep),
        [
            "PUT /v1/agent/service/register\n\n{\"Name\":\"x\"}".to_string(),
            "GET /v1/agent/services\nX-Consul-Token: wrong".to_string(),
            format!("PUT /v1/agent/service/register\n{auth}\n\n{{\"Name\":\"h\",\"Check\":{{\"HTTP\":\"http://x\"}}}}"),
            format!("GET /v1/health/service/x?index=abc&wait=3x\n{auth}"),
            format!("DELETE /v1/kv/x\n{auth}"),
        ]
        .join(sep),
    ];
    requests.iter().map(|r| r.as_bytes().to_vec()).collect()
}

fn write(target: &str, seeds: Vec<Vec<u8>>) -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir)?;
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), seed)?;
    }
    println!("{target}: {} seeds in {}", seeds.len(), dir.display());
    Ok(())
}

fn main() -> std::io::Result<()> {
    write("request_batch", request_batches())?;
    write("response_batch", response_batches())?;
    write("handshake", handshakes())?;
    write("consul_health", health_replies())?;
    write("go_duration", go_durations())?;
    write("dev_agent", dev_agent_requests())?;
    write("trace_context", trace_contexts())?;
    Ok(())
}
