//! The test helpers, checked: the receiver decodes each signal by its path and
//! flattens spans and log records, and the trace checks pass a whole trace and name
//! each way of breaking one.

mod receiver;

use std::time::Duration;

use receiver::tree::{SERVER, check_call_attributes, check_numbers, whole_number_traces};
use receiver::{Receiver, SpanRec, log_records, spans};

fn rec(service: &str, name: &str, kind: i32, ids: (&str, &str), attrs: &[(&str, &str)]) -> SpanRec {
    SpanRec {
        service: service.into(),
        trace_id: "7a".repeat(16),
        span_id: ids.0.into(),
        parent_span_id: ids.1.into(),
        name: name.into(),
        kind,
        status_code: 0,
        status_message: String::new(),
        attributes: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        events: Vec::new(),
    }
}

/// The spans of a whole trace of number 7 (with an activation in fizz).
fn whole_trace() -> Vec<SpanRec> {
    use receiver::tree::{CLIENT, INTERNAL, NUMBER, SAY_BUZZ, SAY_FIZZ};
    let call = |method: &'static str, kind: &'static str, owner: &'static str| {
        vec![
            ("rpc.system.name", "grpc"),
            ("rpc.method", method),
            ("rpc.response.status_code", "OK"),
            ("server.address", "127.0.0.1"),
            ("server.port", "40001"),
            ("grain.kind", kind),
            ("grain.identity", "grain1"),
            ("grain.caller.member_id", "client-01"),
            ("grain.owner.member_id", owner),
        ]
    };
    let fizz = call(SAY_FIZZ, "FizzService", "fizz-01");
    let buzz = call(SAY_BUZZ, "BuzzService", "buzz-01");
    vec![
        rec("client", NUMBER, INTERNAL, ("01", ""), &[(NUMBER, "7")]),
        rec("client", SAY_FIZZ, CLIENT, ("02", "01"), &fizz),
        rec("client", SAY_BUZZ, CLIENT, ("03", "01"), &buzz),
        rec("fizz", SAY_FIZZ, SERVER, ("04", "02"), &fizz),
        rec("buzz", SAY_BUZZ, SERVER, ("05", "03"), &buzz),
        rec("fizz", "activate FizzService", INTERNAL, ("06", "04"), &[]),
    ]
}

fn broken(change: impl Fn(&mut Vec<SpanRec>)) -> String {
    let mut spans = whole_trace();
    change(&mut spans);
    let traces = whole_number_traces(&spans);
    match traces {
        Ok(t) => t
            .values()
            .map(check_call_attributes)
            .find_map(Result::err)
            .unwrap_or_else(|| panic!("a broken trace passed: {spans:#?}")),
        Err(e) => e,
    }
}

#[test]
fn the_trace_checks_pass_a_whole_trace_and_name_what_is_broken() {
    let spans = whole_trace();
    let traces = whole_number_traces(&spans).unwrap_or_else(|e| panic!("{e}"));
    check_numbers(&traces, 7..=7).unwrap_or_else(|e| panic!("{e}"));
    check_call_attributes(&traces[&7]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(traces[&7].activations.len(), 1);
    assert!(check_numbers(&traces, 1..=7).is_err_and(|e| e.contains("6 missing")));

    type Break = fn(&mut Vec<SpanRec>);
    let cases: [(Break, &str); 8] = [
        (|s| drop(s.remove(4)), "0 SERVER spans"),
        (|s| s[4].parent_span_id = "02".into(), "has parent \"02\""),
        (|s| s[5].parent_span_id = "99".into(), "orphaned"),
        (
            |s| s[5].parent_span_id = "05".into(),
            "not a child of the SERVER span",
        ),
        (|s| s[2].status_code = 2, "status ERROR"),
        (|s| s[3].service = "buzz".into(), "0 SERVER spans"),
        (
            |s| {
                let extra = rec("client", "lookup", 1, ("07", "01"), &[]);
                s.push(extra);
            },
            "unexpected INTERNAL span \"lookup\"",
        ),
        (
            |s| {
                s[3].attributes
                    .insert("grain.owner.member_id".into(), "fizz-02".into());
            },
            "grain.owner.member_id",
        ),
    ];
    for (change, says) in cases {
        let e = broken(change);
        assert!(e.contains(says), "{e:?} does not say {says:?}");
        assert!(e.contains("number 7") || e.contains("orphaned"), "{e:?}");
    }
    let e = broken(|s| {
        let mut again = whole_trace();
        for span in &mut again {
            span.trace_id = "7b".repeat(16);
        }
        s.extend(again);
    });
    assert!(e.contains("number 7 has two traces"), "{e}");
}

/// Posts `body` to the receiver over plain HTTP/1.1; returns the status code.
async fn post(receiver: &Receiver, path: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(receiver.addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/x-protobuf\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        receiver.addr,
        body.len()
    );
    let mut answer = Vec::new();
    let exchange = async {
        tcp.write_all(head.as_bytes()).await?;
        tcp.write_all(body).await?;
        tcp.read_to_end(&mut answer).await
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer within 10 s"))
        .unwrap_or_else(|e| panic!("{e}"));
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_decodes_each_signal_by_its_path() {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
    use prost::Message;

    let text = |s: &str| {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(s.into())),
        })
    };
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: text(v),
        ..KeyValue::default()
    };
    let resource = Some(Resource {
        attributes: vec![kv("service.name", "fizz")],
        ..Resource::default()
    });
    let traces = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource.clone(),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![0xAB; 16],
                    span_id: vec![0x0C; 8],
                    parent_span_id: vec![0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08],
                    name: "fizzbuzz.v1.FizzService/SayFizz".into(),
                    kind: SERVER,
                    attributes: vec![kv("grain.kind", "FizzService")],
                    events: vec![span::Event {
                        name: "retry".into(),
                        attributes: vec![kv("grain.retry.attempt", "1")],
                        ..span::Event::default()
                    }],
                    status: Some(Status {
                        message: "no".into(),
                        code: 2,
                    }),
                    ..Span::default()
                }],
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    };
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource,
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    body: text("SayFizz"),
                    trace_id: vec![0xAB; 16],
                    span_id: vec![0x0C; 8],
                    attributes: vec![kv("number", "3")],
                    ..LogRecord::default()
                }],
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    };
    let receiver = Receiver::start().await;
    assert_eq!(
        post(&receiver, "/v1/traces", &traces.encode_to_vec()).await,
        200
    );
    assert_eq!(
        post(&receiver, "/v1/logs", &logs.encode_to_vec()).await,
        200
    );
    assert_eq!(post(&receiver, "/v1/metrics", &[]).await, 200);
    assert_eq!(post(&receiver, "/v1/spans", &[]).await, 404);

    let captured = receiver.captured();
    let paths: Vec<(&str, bool)> = captured
        .iter()
        .map(|c| (c.path.as_str(), c.error.is_none()))
        .collect();
    let want = [
        ("/v1/traces", true),
        ("/v1/logs", true),
        ("/v1/metrics", true),
        ("/v1/spans", false),
    ];
    assert_eq!(paths, want);
    assert!(receiver::points(&captured).is_empty());
    let [s] = &spans(&captured)[..] else {
        panic!("want one span: {:?}", spans(&captured))
    };
    assert_eq!(s.service, "fizz");
    assert_eq!(s.trace_id, "ab".repeat(16));
    assert_eq!(
        (s.span_id.as_str(), s.parent_span_id.as_str()),
        ("0c0c0c0c0c0c0c0c", "0102030405060708")
    );
    assert_eq!(
        (s.kind, s.status_code, s.status_message.as_str()),
        (2, 2, "no")
    );
    assert_eq!(s.attributes["grain.kind"], "FizzService");
    assert_eq!(s.events[0].name, "retry");
    assert_eq!(s.events[0].attributes["grain.retry.attempt"], "1");
    let [r] = &log_records(&captured)[..] else {
        panic!("want one log record")
    };
    assert_eq!((r.service.as_str(), r.body.as_str()), ("fizz", "SayFizz"));
    assert_eq!(
        (r.trace_id.as_str(), r.span_id.as_str()),
        (s.trace_id.as_str(), "0c0c0c0c0c0c0c0c")
    );
    assert_eq!(r.attributes["number"], "3");
}
