//! The trace of one number, as the nodes promise to make it: in `client` the root
//! `fizzbuzz.number` span and its two CLIENT children, in `fizz` and `buzz` the SERVER
//! span of each call (and, when the call activated the grain, an `activate …` span under
//! it). Each check says which number, trace or span is wrong.

use std::collections::{BTreeMap, HashSet};

use super::SpanRec;

pub const NUMBER: &str = "fizzbuzz.number";
pub const SAY_FIZZ: &str = "fizzbuzz.v1.FizzService/SayFizz";
pub const SAY_BUZZ: &str = "fizzbuzz.v1.BuzzService/SayBuzz";
/// The proto's `SpanKind` values.
pub const INTERNAL: i32 = 1;
pub const SERVER: i32 = 2;
pub const CLIENT: i32 = 3;
/// The proto's `StatusCode::Error`.
pub const STATUS_ERROR: i32 = 2;

/// The spans received, grouped by trace id.
pub fn by_trace(spans: &[SpanRec]) -> BTreeMap<&str, Vec<&SpanRec>> {
    let mut out: BTreeMap<&str, Vec<&SpanRec>> = BTreeMap::new();
    for s in spans {
        out.entry(s.trace_id.as_str()).or_default().push(s);
    }
    out
}

/// The spans of one number's trace, by role.
#[derive(Clone, Debug)]
pub struct NumberTrace<'a> {
    pub number: u64,
    pub root: &'a SpanRec,
    pub fizz_client: &'a SpanRec,
    pub buzz_client: &'a SpanRec,
    pub fizz_server: &'a SpanRec,
    pub buzz_server: &'a SpanRec,
    /// `activate FizzService` / `activate BuzzService`, when the call activated a grain.
    pub activations: Vec<&'a SpanRec>,
}

fn kind_name(kind: i32) -> &'static str {
    match kind {
        INTERNAL => "INTERNAL",
        SERVER => "SERVER",
        CLIENT => "CLIENT",
        _ => "other-kind",
    }
}

fn describe(s: &SpanRec) -> String {
    format!(
        "{} span {:?} in {:?} (span {}, parent {:?})",
        kind_name(s.kind),
        s.name,
        s.service,
        s.span_id,
        s.parent_span_id
    )
}

/// The one span of `service`, `name` and `kind` in `spans`, whose parent is `parent`
/// (empty: a root).
fn one<'a>(
    spans: &[&'a SpanRec],
    what: &str,
    (service, name, kind): (&str, &str, i32),
    parent: &str,
) -> Result<&'a SpanRec, String> {
    let found: Vec<&SpanRec> = spans
        .iter()
        .copied()
        .filter(|s| s.service == service && s.name == name && s.kind == kind)
        .collect();
    let [span] = found[..] else {
        return Err(format!(
            "{what}: {} {} spans {name:?} in {service:?}, want exactly 1",
            found.len(),
            kind_name(kind)
        ));
    };
    if span.parent_span_id != parent {
        return Err(format!(
            "{what}: {} has parent {:?}, want {parent:?}",
            describe(span),
            span.parent_span_id
        ));
    }
    Ok(span)
}

/// Checks that `spans`, all of one trace, are exactly one number's trace: every span
/// named, kinded and parented as promised, none orphaned, none extra, none failed.
pub fn number_trace<'a>(spans: &[&'a SpanRec]) -> Result<NumberTrace<'a>, String> {
    let trace = spans.first().map_or("", |s| s.trace_id.as_str());
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    if ids.len() != spans.len() {
        return Err(format!("trace {trace}: a span id arrived twice"));
    }
    for s in spans {
        if !s.parent_span_id.is_empty() && !ids.contains(s.parent_span_id.as_str()) {
            return Err(format!(
                "trace {trace}: {} is orphaned (its parent never arrived)",
                describe(s)
            ));
        }
    }
    let root = one(
        spans,
        &format!("trace {trace}"),
        ("client", NUMBER, INTERNAL),
        "",
    )?;
    let value = root.attributes.get(NUMBER);
    let number: u64 = value.and_then(|v| v.parse().ok()).ok_or_else(|| {
        format!("trace {trace}: the root span's {NUMBER} attribute is {value:?}, not a number")
    })?;
    let what = format!("number {number} (trace {trace})");
    let fizz_client = one(spans, &what, ("client", SAY_FIZZ, CLIENT), &root.span_id)?;
    let buzz_client = one(spans, &what, ("client", SAY_BUZZ, CLIENT), &root.span_id)?;
    let fizz_server = one(
        spans,
        &what,
        ("fizz", SAY_FIZZ, SERVER),
        &fizz_client.span_id,
    )?;
    let buzz_server = one(
        spans,
        &what,
        ("buzz", SAY_BUZZ, SERVER),
        &buzz_client.span_id,
    )?;
    let mut activations = Vec::new();
    for s in spans {
        let known = [root, fizz_client, buzz_client, fizz_server, buzz_server];
        if known.iter().any(|k| std::ptr::eq(*k, *s)) {
            continue;
        }
        let under = match (s.service.as_str(), s.name.as_str(), s.kind) {
            ("fizz", "activate FizzService", INTERNAL) => fizz_server,
            ("buzz", "activate BuzzService", INTERNAL) => buzz_server,
            _ => return Err(format!("{what}: unexpected {}", describe(s))),
        };
        if s.parent_span_id != under.span_id {
            return Err(format!(
                "{what}: {} is not a child of the SERVER span {}",
                describe(s),
                under.span_id
            ));
        }
        activations.push(*s);
    }
    if let Some(s) = spans.iter().find(|s| s.status_code == STATUS_ERROR) {
        return Err(format!(
            "{what}: {} has status ERROR: {:?}",
            describe(s),
            s.status_message
        ));
    }
    Ok(NumberTrace {
        number,
        root,
        fizz_client,
        buzz_client,
        fizz_server,
        buzz_server,
        activations,
    })
}

/// Every trace received, each checked by [`number_trace`], by number; an error names
/// the first trace that is not whole or a number traced twice.
pub fn whole_number_traces(spans: &[SpanRec]) -> Result<BTreeMap<u64, NumberTrace<'_>>, String> {
    let mut out = BTreeMap::new();
    for (trace, of_trace) in by_trace(spans) {
        let t = number_trace(&of_trace)?;
        if let Some(earlier) = out.insert(t.number, t) {
            return Err(format!(
                "number {} has two traces: {} and {trace}",
                earlier.number, earlier.root.trace_id
            ));
        }
    }
    Ok(out)
}

/// Checks the attributes the CLIENT and SERVER spans of both calls of `t` carry, and
/// that both ends of each call name the same grain, caller and owner.
pub fn check_call_attributes(t: &NumberTrace<'_>) -> Result<(), String> {
    let calls = [
        (t.fizz_client, t.fizz_server, "FizzService", "fizz-"),
        (t.buzz_client, t.buzz_server, "BuzzService", "buzz-"),
    ];
    for (client, server, kind, owner) in calls {
        for s in [client, server] {
            let get = |k: &str| s.attributes.get(k).map(String::as_str).unwrap_or("");
            let wrong = |k: &str, want: &str| {
                format!(
                    "number {}: {} has {k}={:?}, want {want}",
                    t.number,
                    describe(s),
                    get(k)
                )
            };
            for (k, want) in [
                ("rpc.system.name", "grpc"),
                ("rpc.method", s.name.as_str()),
                ("rpc.response.status_code", "OK"),
                ("grain.kind", kind),
            ] {
                if get(k) != want {
                    return Err(wrong(k, want));
                }
            }
            for k in ["server.address", "grain.identity"] {
                if get(k).is_empty() {
                    return Err(wrong(k, "a value"));
                }
            }
            if !get("server.port").parse::<u16>().is_ok_and(|p| p > 0) {
                return Err(wrong("server.port", "a port"));
            }
            if !get("grain.caller.member_id").starts_with("client-") {
                return Err(wrong("grain.caller.member_id", "the client's member id"));
            }
            if !get("grain.owner.member_id").starts_with(owner) {
                return Err(wrong("grain.owner.member_id", &format!("{owner}…")));
            }
        }
        for k in [
            "grain.identity",
            "grain.caller.member_id",
            "grain.owner.member_id",
        ] {
            let (c, s) = (client.attributes.get(k), server.attributes.get(k));
            if c != s {
                return Err(format!(
                    "number {}: {} says {k}={c:?}, its SERVER span {s:?}",
                    t.number, client.name
                ));
            }
        }
    }
    Ok(())
}

/// Checks the numbers traced are exactly `want`, naming the first few missing or extra.
pub fn check_numbers<T>(
    traces: &BTreeMap<u64, T>,
    want: std::ops::RangeInclusive<u64>,
) -> Result<(), String> {
    let missing: Vec<u64> = want.clone().filter(|n| !traces.contains_key(n)).collect();
    let extra: Vec<u64> = traces
        .keys()
        .copied()
        .filter(|n| !want.contains(n))
        .collect();
    if missing.is_empty() && extra.is_empty() {
        return Ok(());
    }
    let few = |v: &[u64]| {
        format!(
            "{:?}{}",
            &v[..v.len().min(10)],
            if v.len() > 10 { "…" } else { "" }
        )
    };
    Err(format!(
        "{} numbers traced; {} missing {}, {} not in {want:?} {}",
        traces.len(),
        missing.len(),
        few(&missing),
        extra.len(),
        few(&extra)
    ))
}
