//! Traces and logs leave every node over OTLP/HTTP (`/v1/traces`, `/v1/logs`) and make,
//! for each number, one whole trace across the three services (docs/tracing.md): checked
//! at the in-process receiver with the default sampler, a ratio sampler, the B3
//! propagators, and against the JSON log lines of the same calls.

mod common;
mod receiver;

use std::collections::{BTreeMap, HashMap};
use std::process::{Output, Stdio};
use std::time::Duration;

use common::{assert_reference, assert_success, clean_env};
use receiver::tree::{
    NumberTrace, SERVER, check_call_attributes, check_numbers, whole_number_traces,
};
use receiver::{Captured, LogRec, Receiver, SpanRec, log_records, spans};
use tokio::process::Command;

const FIZZBUZZ: &str = env!("CARGO_BIN_EXE_fizzbuzz");
const FIZZ: &str = env!("CARGO_BIN_EXE_fizz");
const BUZZ: &str = env!("CARGO_BIN_EXE_buzz");
const CLIENT: &str = env!("CARGO_BIN_EXE_client");
/// How long the receiver is polled after the run: every process flushes its telemetry
/// before it exits, so this is only a bound for when one does not.
const SETTLE: Duration = Duration::from_secs(10);

/// A node or `fizzbuzz` command exporting to `receiver` (spans every 100 ms), with no
/// telemetry or log setting inherited from the shell.
fn command(program: &str, receiver: &Receiver) -> Command {
    let mut c = Command::new(program);
    clean_env(&mut c);
    c.kill_on_drop(true)
        .stdin(Stdio::null())
        .env("FIZZBUZZ_LOG", "warn")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.base())
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    c
}

async fn output(mut c: Command, within: Duration) -> Output {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().unwrap_or_else(|e| panic!("cannot start: {e}"));
    tokio::time::timeout(within, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("did not finish within {within:?}"))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `fizzbuzz up --count count args…` exporting to `receiver`, `env` set on top; its
/// children inherit the environment.
async fn up(receiver: &Receiver, count: u64, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = command(FIZZBUZZ, receiver);
    c.args(["up", "--count", &count.to_string()]).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = output(c, Duration::from_secs(180)).await;
    assert_success(&out);
    assert_reference(&out.stdout, count);
    out
}

fn no_undecodable(captured: &[Captured]) {
    for c in captured {
        assert!(c.error.is_none(), "{}: {:?}", c.path, c.error);
    }
}

/// Waits for the trace of every number of 1..=count, then checks each is whole, its
/// calls' attributes, and that both grains' activations were traced; returns the spans.
async fn assert_every_number_traced(receiver: &Receiver, count: u64, run: &str) -> Vec<SpanRec> {
    let captured = receiver
        .wait_for(SETTLE, |c| {
            whole_number_traces(&spans(c)).is_ok_and(|t| t.len() as u64 == count)
        })
        .await;
    no_undecodable(&captured);
    let spans = spans(&captured);
    let traces = whole_number_traces(&spans).unwrap_or_else(|e| panic!("{run}: {e}"));
    check_numbers(&traces, 1..=count).unwrap_or_else(|e| panic!("{run}: {e}"));
    for t in traces.values() {
        check_call_attributes(t).unwrap_or_else(|e| panic!("{run}: {e}"));
    }
    for (service, name) in [
        ("fizz", "activate FizzService"),
        ("buzz", "activate BuzzService"),
    ] {
        assert!(
            traces
                .values()
                .flat_map(|t| &t.activations)
                .any(|a| a.service == service && a.name == name),
            "{run}: no trace shows {name:?} under a {service} SERVER span"
        );
    }
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_number_makes_one_whole_trace_across_the_three_services() {
    let receiver = Receiver::start().await;
    up(&receiver, 100, &[], &[]).await;
    assert_every_number_traced(&receiver, 100, "default sampler").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ratio_sampler_keeps_about_a_tenth_of_the_numbers_each_whole() {
    let receiver = Receiver::start().await;
    let env = [
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
    ];
    up(&receiver, 2000, &["--concurrency", "64"], &env).await;
    // 200 expected; 140..=260 is more than four standard deviations (13.4) either side.
    let expected = 140..=260;
    let captured = receiver
        .wait_for(SETTLE, |c| {
            whole_number_traces(&spans(c)).is_ok_and(|t| expected.contains(&t.len()))
        })
        .await;
    no_undecodable(&captured);
    let spans = spans(&captured);
    let traces = whole_number_traces(&spans).unwrap_or_else(|e| panic!("ratio 0.1: {e}"));
    assert!(
        expected.contains(&traces.len()),
        "ratio 0.1 traced {} of 2000 numbers, want {expected:?}",
        traces.len()
    );
    if let Some(n) = traces.keys().find(|n| !(1..=2000).contains(*n)) {
        panic!("ratio 0.1: a trace for number {n}, which was never asked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_b3_propagators_carry_the_trace_across_the_calls() {
    for propagator in ["b3", "b3multi"] {
        let receiver = Receiver::start().await;
        up(&receiver, 100, &[], &[("OTEL_PROPAGATORS", propagator)]).await;
        assert_every_number_traced(&receiver, 100, &format!("OTEL_PROPAGATORS={propagator}")).await;
    }
}

/// The control for the test above: the context travels only in the headers the
/// configured propagator writes, so a client writing B3 to servers that read only W3C
/// trace context leaves every SERVER span the root of a trace of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_reading_another_propagator_start_traces_of_their_own() {
    let receiver = Receiver::start().await;
    let (mut agent, consul) = common::start_agent(command(FIZZBUZZ, &receiver)).await;
    let node = |program: &str| {
        command(program, &receiver)
            .env("CONSUL_HTTP_ADDR", &consul)
            .env("OTEL_PROPAGATORS", "tracecontext")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"))
    };
    let (fizz, buzz) = (node(FIZZ), node(BUZZ));
    let mut client = command(CLIENT, &receiver);
    client
        .env("CONSUL_HTTP_ADDR", &consul)
        .env("OTEL_PROPAGATORS", "b3")
        .args(["--count", "20"]);
    let out = output(client, Duration::from_secs(60)).await;
    assert_success(&out);
    assert_reference(&out.stdout, 20);
    common::terminate(fizz, "fizz").await;
    common::terminate(buzz, "buzz").await;
    let _ = agent.kill().await;

    let servers = |s: &[SpanRec]| s.iter().filter(|s| s.kind == SERVER).count();
    let captured = receiver
        .wait_for(SETTLE, |c| servers(&spans(c)) >= 40)
        .await;
    let spans = spans(&captured);
    assert_eq!(servers(&spans), 40, "SERVER spans of 20 numbers");
    let client_traces: Vec<&str> = spans
        .iter()
        .filter(|s| s.service == "client")
        .map(|s| s.trace_id.as_str())
        .collect();
    assert!(!client_traces.is_empty(), "the client sent no span");
    for s in spans.iter().filter(|s| s.kind == SERVER) {
        assert!(
            s.parent_span_id.is_empty() && !client_traces.contains(&s.trace_id.as_str()),
            "{} SERVER span {} (trace {}, parent {:?}) joined the client's trace \
             although the client wrote B3 and the servers read only tracecontext",
            s.service,
            s.span_id,
            s.trace_id,
            s.parent_span_id
        );
    }
}

/// What a JSON log line of a grain call says: its number, trace id and span id.
#[derive(Debug)]
struct CallLine {
    number: u64,
    trace_id: String,
    span_id: String,
}

/// The `message` lines of target `fizzbuzz::grains` in `json`, by number (a number
/// logged twice fails).
fn call_lines(json: &[serde_json::Value], message: &str) -> BTreeMap<u64, CallLine> {
    let mut out = BTreeMap::new();
    let of_call = json
        .iter()
        .filter(|j| j["target"] == "fizzbuzz::grains" && j["message"] == message);
    for j in of_call {
        assert_eq!(j["level"], "DEBUG", "{j}");
        let number = &j["fields"]["number"];
        let number = number
            .as_u64()
            .or_else(|| number.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or_else(|| panic!("a {message} line without a number field: {j}"));
        let id = |k: &str, len: usize| {
            let v = j[k].as_str().unwrap_or("").to_string();
            assert!(
                v.len() == len && v.bytes().all(|b| b.is_ascii_hexdigit()),
                "{message} line of number {number}: {k} is not {len} hex digits: {j}"
            );
            v.to_ascii_lowercase()
        };
        let line = CallLine {
            number,
            trace_id: id("trace_id", 32),
            span_id: id("span_id", 16),
        };
        if let Some(first) = out.insert(number, line) {
            panic!("number {number} logged {message} twice: {first:?} and {j}");
        }
    }
    out
}

/// The records of `service` whose body is `body`.
fn records<'a>(logs: &'a [LogRec], service: &str, body: &str) -> Vec<&'a LogRec> {
    logs.iter()
        .filter(|r| r.service == service && r.body == body)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_and_log_records_carry_the_span_of_the_call_they_serve() {
    let receiver = Receiver::start().await;
    // `up` passes its own filter (`--log-level`, FIZZBUZZ_LOG, default warn) to its
    // children, and its log format too.
    let out = up(
        &receiver,
        100,
        &["--log-format", "json"],
        &[("FIZZBUZZ_LOG", "info,fizzbuzz=debug")],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // In JSON, every line on stderr is a JSON object (`up`'s banner and the client's
    // report included).
    let mut json = Vec::new();
    for line in stderr.lines() {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) if v.is_object() => json.push(v),
            _ => panic!("not a JSON log line: {line:?}"),
        }
    }

    let complete = |c: &[Captured]| {
        let logs = log_records(c);
        whole_number_traces(&spans(c)).is_ok_and(|t| t.len() == 100)
            && records(&logs, "fizz", "SayFizz").len() >= 100
            && records(&logs, "buzz", "SayBuzz").len() >= 100
    };
    let captured = receiver.wait_for(SETTLE, complete).await;
    no_undecodable(&captured);
    let spans = spans(&captured);
    let traces = whole_number_traces(&spans).unwrap_or_else(|e| panic!("{e}"));
    check_numbers(&traces, 1..=100).unwrap_or_else(|e| panic!("{e}"));
    let by_trace_id: HashMap<&str, &NumberTrace<'_>> = traces
        .values()
        .map(|t| (t.root.trace_id.as_str(), t))
        .collect();
    let logs = log_records(&captured);

    type Server = for<'a> fn(&NumberTrace<'a>) -> &'a SpanRec;
    let calls: [(&str, &str, Server); 2] = [
        ("SayFizz", "fizz", |t| t.fizz_server),
        ("SayBuzz", "buzz", |t| t.buzz_server),
    ];
    for (message, service, server_of) in calls {
        // The stderr lines, against the SERVER span of the trace of their number.
        let lines = call_lines(&json, message);
        check_numbers(&lines, 1..=100).unwrap_or_else(|e| panic!("{message} lines: {e}"));
        for line in lines.values() {
            let server = server_of(&traces[&line.number]);
            assert_eq!(
                (line.trace_id.as_str(), line.span_id.as_str()),
                (server.trace_id.as_str(), server.span_id.as_str()),
                "number {}: the {message} log line is not in the {service} SERVER span",
                line.number
            );
        }
        // The OTLP records, against the SERVER span of the trace they name.
        let records = records(&logs, service, message);
        assert_eq!(records.len(), 100, "{message} records from {service}");
        for r in records {
            let t = by_trace_id.get(r.trace_id.as_str()).unwrap_or_else(|| {
                panic!(
                    "a {message} record names trace {:?}, not a number's",
                    r.trace_id
                )
            });
            let server = server_of(t);
            assert_eq!(
                r.span_id, server.span_id,
                "number {}: the {message} record is not in the {service} SERVER span",
                t.number
            );
            assert_eq!(
                r.attributes.get("number"),
                Some(&t.number.to_string()),
                "number {}: the {message} record's number attribute",
                t.number
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_json_every_stderr_line_is_an_object_whatever_the_filter() {
    let receiver = Receiver::start().await;
    // The default filter of `up`'s children is `warn`: the client's report (an info
    // event in JSON) must still be there, as the human report always is.
    let out = up(&receiver, 15, &["--log-format", "json"], &[]).await;
    assert!(out.status.success(), "up failed: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut events = Vec::new();
    for line in stderr.lines() {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) if v.is_object() => events.push(v),
            _ => panic!("not a JSON log line: {line:?}"),
        }
    }
    let said = |target: &str, text: &str| {
        events.iter().any(|e| {
            e["target"] == target && e["message"].as_str().is_some_and(|m| m.contains(text))
        })
    };
    assert!(
        said("fizzbuzz::report", "15 of 15 numbers answered"),
        "no report: {stderr}"
    );
    assert!(
        said("fizzbuzz::launcher", "fizzbuzz up"),
        "no banner: {stderr}"
    );
}
