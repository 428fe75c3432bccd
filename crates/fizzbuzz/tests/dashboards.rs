//! The dashboards under `deploy/` chart only metrics that exist, and group by resource
//! attributes.
//!
//! - `deploy/grafana/dashboards/fizzbuzz.json`: every PromQL expression (panel targets
//!   and template variables) names only Prometheus series of a metric in
//!   `docs/metrics.md` (the catalog) or `deploy/host-metrics.md` (the collector's
//!   hostmetrics receiver), translated as the collector's `prometheus` exporter does
//!   (`pkg/translator/prometheus` in opentelemetry-collector-contrib: dots and other
//!   separators become `_`, the unit is appended unless it is in braces or already in
//!   the name, `_total` for monotonic sums, `_ratio` for gauges of unit `1`, and
//!   `_bucket`/`_sum`/`_count` for histograms).
//! - `deploy/newrelic/dashboard.json`: every `FROM Metric` NRQL query names only
//!   OpenTelemetry names from the same two tables (New Relic keeps the OTLP names).
//! - No query groups or filters by the data point attributes `member` or `address`
//!   (they are moving to the resource); the dashboards use `service_instance_id` /
//!   `service.instance.id`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

const CATALOG: (&str, &str, &str) = ("docs/metrics.md", "<!-- catalog:start", "<!-- catalog:end");
const HOST: (&str, &str, &str) = (
    "deploy/host-metrics.md",
    "<!-- host-metrics:start",
    "<!-- host-metrics:end",
);
const GRAFANA: &str = "deploy/grafana/dashboards/fizzbuzz.json";
const NEW_RELIC: &str = "deploy/newrelic/dashboard.json";

/// Data point attributes that must not be used: they are leaving the data points.
const BANNED_ATTRIBUTES: &[&str] = &["member", "address"];

#[derive(Debug, Clone)]
struct Metric {
    name: String,
    kind: String,
    unit: String,
}

fn read(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The rows of a markdown table between two markers: `| `name` | kind | `unit` | ...`.
fn metric_table((rel, start, end): (&str, &str, &str)) -> Vec<Metric> {
    let doc = read(rel);
    let (Some(s), Some(e)) = (doc.find(start), doc.find(end)) else {
        panic!("{rel} has no {start} / {end} markers");
    };
    let rows: Vec<Metric> = doc[s..e]
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            assert!(cells.len() >= 5, "{rel}: short row {l}");
            let m = Metric {
                name: cells[1].trim_matches('`').to_string(),
                kind: cells[2].to_string(),
                unit: cells[3].trim_matches('`').to_string(),
            };
            assert!(
                ["counter", "updowncounter", "gauge", "histogram"].contains(&m.kind.as_str()),
                "{rel}: {} has an unknown kind {:?}",
                m.name,
                m.kind
            );
            m
        })
        .collect();
    assert!(
        !rows.is_empty(),
        "{rel}: no metric rows between the markers"
    );
    rows
}

fn all_metrics() -> Vec<Metric> {
    let mut all = metric_table(CATALOG);
    all.extend(metric_table(HOST));
    all
}

/// Prometheus base units for the UCUM units the collector's translator knows.
fn prometheus_unit(unit: &str) -> &str {
    match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "1" => "",
        "%" => "percent",
        other => other,
    }
}

fn per_unit(unit: &str) -> &str {
    match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    }
}

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// The Prometheus series names the collector's `prometheus` exporter makes of a metric.
fn prometheus_names(m: &Metric) -> Vec<String> {
    let mut tokens = words(&m.name);
    let mut units = m.unit.splitn(2, '/');
    let main = units.next().unwrap_or("").trim();
    if !main.is_empty() && !main.contains(['{', '}']) {
        let u = words(prometheus_unit(main)).join("_");
        if !u.is_empty() && !tokens.contains(&u) {
            tokens.push(u);
        }
    }
    if let Some(per) = units.next().map(str::trim)
        && !per.is_empty()
        && !per.contains(['{', '}'])
    {
        let u = words(per_unit(per)).join("_");
        if !u.is_empty() && !tokens.contains(&u) {
            tokens.push("per".into());
            tokens.push(u);
        }
    }
    if m.kind == "counter" {
        tokens.retain(|t| t != "total");
        tokens.push("total".into());
    }
    if m.unit == "1" && m.kind == "gauge" {
        tokens.retain(|t| t != "ratio");
        tokens.push("ratio".into());
    }
    let base = tokens.join("_");
    if m.kind == "histogram" {
        ["_bucket", "_sum", "_count"]
            .iter()
            .map(|s| format!("{base}{s}"))
            .collect()
    } else {
        vec![base]
    }
}

fn known_prometheus_names(metrics: &[Metric]) -> BTreeSet<String> {
    metrics.iter().flat_map(prometheus_names).collect()
}

fn known_otel_names(metrics: &[Metric]) -> BTreeSet<String> {
    metrics.iter().map(|m| m.name.clone()).collect()
}

// ---------------------------------------------------------------------------------
// PromQL

#[derive(Debug, PartialEq, Clone, Copy)]
enum Role {
    Metric,
    Label,
    Function,
    Keyword,
}

/// PromQL functions and aggregation operators (followed by `(`).
const PROMQL_FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "avg",
    "avg_over_time",
    "bottomk",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "count",
    "count_over_time",
    "count_values",
    "delta",
    "deriv",
    "exp",
    "floor",
    "group",
    "histogram_quantile",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log2",
    "log10",
    "max",
    "max_over_time",
    "min",
    "min_over_time",
    "predict_linear",
    "quantile",
    "quantile_over_time",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sort",
    "sort_desc",
    "sqrt",
    "stddev",
    "stdvar",
    "sum",
    "sum_over_time",
    "time",
    "timestamp",
    "topk",
    "vector",
];

/// Keywords whose parenthesised list holds label names.
const PROMQL_GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const PROMQL_KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];

fn next_non_space(b: &[char], mut i: usize) -> Option<char> {
    while i < b.len() && b[i].is_whitespace() {
        i += 1;
    }
    b.get(i).copied()
}

/// Index just past the string literal starting at `i` (quote at `b[i]`).
fn skip_string(b: &[char], mut i: usize) -> usize {
    let quote = b[i];
    i += 1;
    while i < b.len() && b[i] != quote {
        if b[i] == '\\' && quote != '`' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The identifiers of a PromQL expression with what they are: metric names, label
/// names (in `{...}` matchers and `by (...)`-style lists), functions and keywords.
/// Strings, numbers, durations, `[...]` ranges and Grafana `$variables` are skipped.
fn promql_identifiers(expr: &str) -> Result<Vec<(Role, String)>, String> {
    let b: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    // For each open parenthesis: does it hold a list of label names?
    let mut parens: Vec<bool> = Vec::new();
    let mut label_list_next = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&b, i);
        } else if c == '#' {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '{' {
            // Label matchers: identifiers are label names, values are strings.
            i += 1;
            loop {
                match b.get(i) {
                    None => return Err(format!("unclosed {{ in {expr:?}")),
                    Some('}') => break,
                    Some('"') | Some('\'') | Some('`') => i = skip_string(&b, i),
                    Some(&ch) if is_ident_start(ch) => {
                        let s = i;
                        while i < b.len() && is_ident_char(b[i]) {
                            i += 1;
                        }
                        out.push((Role::Label, b[s..i].iter().collect()));
                    }
                    Some(_) => i += 1,
                }
            }
            i += 1;
        } else if c == '[' {
            while i < b.len() && b[i] != ']' {
                i += 1;
            }
            if i == b.len() {
                return Err(format!("unclosed [ in {expr:?}"));
            }
            i += 1;
        } else if c == '$' {
            i += 1;
            if b.get(i) == Some(&'{') {
                while i < b.len() && b[i] != '}' {
                    i += 1;
                }
                i += 1;
            } else {
                while i < b.len() && is_ident_char(b[i]) {
                    i += 1;
                }
            }
        } else if c == '(' {
            parens.push(label_list_next);
            label_list_next = false;
            i += 1;
        } else if c == ')' {
            if parens.pop().is_none() {
                return Err(format!("unbalanced ) in {expr:?}"));
            }
            i += 1;
        } else if c.is_ascii_digit() || (c == '.' && b.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // Numbers (0.95, 1e-3, 0x1f) and durations (5m, 1h30m).
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '.' || b[i] == '_') {
                if (b[i] == 'e' || b[i] == 'E') && matches!(b.get(i + 1), Some('+') | Some('-')) {
                    i += 1;
                }
                i += 1;
            }
        } else if is_ident_start(c) {
            let s = i;
            while i < b.len() && is_ident_char(b[i]) {
                i += 1;
            }
            let word: String = b[s..i].iter().collect();
            let followed_by_paren = next_non_space(&b, i) == Some('(');
            // `sum by (le) (...)`: an aggregation with its grouping first.
            let followed_by_grouping = {
                let mut j = i;
                while j < b.len() && b[j].is_whitespace() {
                    j += 1;
                }
                let s = j;
                while j < b.len() && is_ident_char(b[j]) {
                    j += 1;
                }
                let next: String = b[s..j].iter().collect();
                next == "by" || next == "without"
            };
            let role = if parens.last() == Some(&true) {
                Role::Label
            } else if PROMQL_GROUPING.contains(&word.as_str()) {
                label_list_next = followed_by_paren;
                Role::Keyword
            } else if PROMQL_KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
                Role::Keyword
            } else if followed_by_paren || followed_by_grouping {
                if !PROMQL_FUNCTIONS.contains(&word.as_str()) {
                    return Err(format!("unknown PromQL function {word:?} in {expr:?}"));
                }
                Role::Function
            } else {
                Role::Metric
            };
            out.push((role, word));
        } else {
            i += 1;
        }
    }
    if !parens.is_empty() {
        return Err(format!("unclosed ( in {expr:?}"));
    }
    Ok(out)
}

/// What is wrong with one PromQL expression: unknown metrics, banned labels.
fn promql_problems(expr: &str, known: &BTreeSet<String>) -> Vec<String> {
    let ids = match promql_identifiers(expr) {
        Ok(ids) => ids,
        Err(e) => return vec![e],
    };
    let mut problems = Vec::new();
    if !ids.iter().any(|(r, _)| *r == Role::Metric) {
        problems.push(format!("names no metric: {expr:?}"));
    }
    for (role, word) in ids {
        match role {
            Role::Metric if !known.contains(&word) => problems.push(format!(
                "unknown metric {word:?} (not a Prometheus name of any metric in docs/metrics.md or deploy/host-metrics.md)"
            )),
            Role::Label if BANNED_ATTRIBUTES.contains(&word.as_str()) => problems.push(format!(
                "uses the data point label {word:?}: group by service_name / service_instance_id"
            )),
            _ => {}
        }
    }
    problems
}

/// A Grafana template variable query: `label_values(selector, label)`,
/// `label_values(label)` or `query_result(expr)`: the PromQL in it, if any, and the
/// label it reads.
fn variable_query(q: &str) -> (Option<String>, Option<String>) {
    let q = q.trim();
    if let Some(inner) = q
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
    {
        // The label is after the last comma at depth 0.
        let mut depth = 0i32;
        let mut split = None;
        for (i, c) in inner.char_indices() {
            match c {
                '(' | '{' | '[' => depth += 1,
                ')' | '}' | ']' => depth -= 1,
                ',' if depth == 0 => split = Some(i),
                _ => {}
            }
        }
        return match split {
            Some(i) => (
                Some(inner[..i].trim().to_string()),
                Some(inner[i + 1..].trim().to_string()),
            ),
            None => (None, Some(inner.trim().to_string())),
        };
    }
    if let Some(inner) = q
        .strip_prefix("query_result(")
        .and_then(|r| r.strip_suffix(')'))
    {
        return (Some(inner.to_string()), None);
    }
    (Some(q.to_string()), None)
}

/// (panel title, expression) of every panel target, rows' nested panels included.
fn grafana_targets(panels: &Value, out: &mut Vec<(String, String, String)>) {
    for p in panels.as_array().into_iter().flatten() {
        let title = p["title"].as_str().unwrap_or("(untitled)").to_string();
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = t["expr"].as_str() {
                let legend = t["legendFormat"].as_str().unwrap_or("").to_string();
                out.push((title.clone(), expr.to_string(), legend));
            }
        }
        grafana_targets(&p["panels"], out);
    }
}

// ---------------------------------------------------------------------------------
// NRQL

#[derive(Debug, PartialEq, Clone)]
enum Tok {
    Ident(String),
    Str(String),
    Punct(char),
    Number,
}

fn nrql_tokens(q: &str) -> Vec<Tok> {
    let b: Vec<char> = q.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' {
            let end = skip_string(&b, i).min(b.len());
            out.push(Tok::Str(
                b[i + 1..end.saturating_sub(1).max(i + 1)].iter().collect(),
            ));
            i = end;
        } else if c == '`' {
            // Backquoted attribute or metric name.
            let end = skip_string(&b, i).min(b.len());
            out.push(Tok::Ident(
                b[i + 1..end.saturating_sub(1).max(i + 1)].iter().collect(),
            ));
            i = end;
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '.') {
                i += 1;
            }
            out.push(Tok::Number);
        } else if c.is_ascii_alphabetic() || c == '_' {
            let s = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_' || b[i] == '.') {
                i += 1;
            }
            out.push(Tok::Ident(b[s..i].iter().collect()));
        } else {
            out.push(Tok::Punct(c));
            i += 1;
        }
    }
    out
}

/// NRQL functions whose first argument, when a bare name, is a metric (in a
/// `FROM Metric` query).
const NRQL_METRIC_AGGREGATORS: &[&str] = &[
    "average",
    "bucketpercentile",
    "cdfpercentage",
    "count",
    "derivative",
    "earliest",
    "histogram",
    "latest",
    "max",
    "median",
    "min",
    "percentile",
    "stddev",
    "sum",
];
/// NRQL functions whose arguments are attributes or other expressions.
const NRQL_OTHER_FUNCTIONS: &[&str] = &[
    "filter",
    "rate",
    "uniquecount",
    "uniques",
    "keyset",
    "cases",
    "if",
    "abs",
    "round",
    "floor",
    "ceil",
    "buckets",
];
/// NRQL keywords that may stand before a parenthesis.
const NRQL_KEYWORDS: &[&str] = &["in", "and", "or", "not", "where", "select", "facet", "as"];

fn is_metric_query(toks: &[Tok]) -> bool {
    toks.windows(2).any(|w| {
        matches!((&w[0], &w[1]), (Tok::Ident(a), Tok::Ident(b))
            if a.eq_ignore_ascii_case("from") && b.eq_ignore_ascii_case("metric"))
    })
}

/// The metric names a `FROM Metric` query uses (aggregator arguments and
/// `metricName = '...'` / `metricName IN (...)`), or an error for a function this
/// extractor does not know.
fn nrql_metric_names(q: &str) -> Result<Vec<String>, String> {
    let toks = nrql_tokens(q);
    let mut names = Vec::new();
    let metric_query = is_metric_query(&toks);
    for (i, t) in toks.iter().enumerate() {
        let Tok::Ident(word) = t else { continue };
        let lower = word.to_ascii_lowercase();
        if toks.get(i + 1) == Some(&Tok::Punct('(')) {
            if NRQL_METRIC_AGGREGATORS.contains(&lower.as_str()) {
                if let (Some(Tok::Ident(arg)), Some(Tok::Punct(',' | ')'))) =
                    (toks.get(i + 2), toks.get(i + 3))
                    && metric_query
                {
                    names.push(arg.clone());
                }
            } else if !NRQL_OTHER_FUNCTIONS.contains(&lower.as_str())
                && !NRQL_KEYWORDS.contains(&lower.as_str())
            {
                return Err(format!("unknown NRQL function {word:?} in {q:?}"));
            }
        }
        if metric_query && lower == "metricname" {
            match (toks.get(i + 1), toks.get(i + 2)) {
                (Some(Tok::Punct('=')), Some(Tok::Str(s))) => names.push(s.clone()),
                (Some(Tok::Ident(kw)), Some(Tok::Punct('('))) if kw.eq_ignore_ascii_case("in") => {
                    for t in toks[i + 3..].iter() {
                        match t {
                            Tok::Str(s) => names.push(s.clone()),
                            Tok::Punct(')') => break,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(names)
}

fn nrql_problems(q: &str, known: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    match nrql_metric_names(q) {
        Err(e) => problems.push(e),
        Ok(names) => {
            if is_metric_query(&nrql_tokens(q)) && names.is_empty() {
                problems.push(format!("a FROM Metric query naming no metric: {q:?}"));
            }
            for n in names {
                if !known.contains(&n) {
                    problems.push(format!(
                        "unknown metric {n:?} (not in docs/metrics.md or deploy/host-metrics.md)"
                    ));
                }
            }
        }
    }
    for t in nrql_tokens(q) {
        if let Tok::Ident(w) = t
            && BANNED_ATTRIBUTES.contains(&w.as_str())
        {
            problems.push(format!(
                "uses the data point attribute {w:?}: facet by service.name / service.instance.id"
            ));
        }
    }
    problems
}

/// (widget title, query) of every NRQL query of a New Relic dashboard.
fn new_relic_queries(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for page in dash["pages"].as_array().into_iter().flatten() {
        for w in page["widgets"].as_array().into_iter().flatten() {
            let title = w["title"].as_str().unwrap_or("(untitled)").to_string();
            for q in w["rawConfiguration"]["nrqlQueries"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(query) = q["query"].as_str() {
                    out.push((title.clone(), query.to_string()));
                }
            }
        }
    }
    out
}

fn parse_json(rel: &str) -> Value {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

// ---------------------------------------------------------------------------------
// Tests

#[test]
fn the_prometheus_translation_matches_the_collectors() {
    let m = |name: &str, kind: &str, unit: &str| Metric {
        name: name.into(),
        kind: kind.into(),
        unit: unit.into(),
    };
    let one = |x: Metric| prometheus_names(&x);
    assert_eq!(
        one(m("rpc.client.call.duration", "histogram", "s")),
        [
            "rpc_client_call_duration_seconds_bucket",
            "rpc_client_call_duration_seconds_sum",
            "rpc_client_call_duration_seconds_count"
        ]
    );
    assert_eq!(
        one(m("protoactor_future_started_count", "counter", "{call}")),
        ["protoactor_future_started_count_total"]
    );
    assert_eq!(
        one(m("protocluster_members_count", "gauge", "{member}")),
        ["protocluster_members_count"]
    );
    assert_eq!(
        one(m("grain_membership_provider_up", "gauge", "1")),
        ["grain_membership_provider_up_ratio"]
    );
    assert_eq!(
        one(m("process.memory.usage", "updowncounter", "By")),
        ["process_memory_usage_bytes"]
    );
    assert_eq!(
        one(m("system.cpu.time", "counter", "s")),
        ["system_cpu_time_seconds_total"]
    );
    assert_eq!(
        one(m("system.cpu.load_average.1m", "gauge", "{thread}")),
        ["system_cpu_load_average_1m"]
    );
    assert_eq!(
        one(m("grain_remote_batch_size", "histogram", "{message}"))[0],
        "grain_remote_batch_size_bucket"
    );
    // A unit already in the name is not repeated; rates become "per".
    assert_eq!(one(m("x.bytes", "gauge", "By")), ["x_bytes"]);
    assert_eq!(
        one(m("x.speed", "gauge", "m/s")),
        ["x_speed_meters_per_second"]
    );
}

#[test]
fn the_extractors_report_unknown_metrics_and_accept_known_ones() {
    let known = known_prometheus_names(&all_metrics());
    let bad = "sum by (service_name) (rate(not_a_metric_total{service_instance_id=~\"$service_instance_id\"}[$__rate_interval]))";
    let p = promql_problems(bad, &known);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("not_a_metric_total"), "{p:?}");

    let good = "histogram_quantile(0.99, sum by (le, service_name) (rate(rpc_client_call_duration_seconds_bucket{service_name=~\"$service_name\", le!=\"+Inf\"}[5m]))) * 1e3";
    assert_eq!(promql_problems(good, &known), Vec::<String>::new());
    let ids = promql_identifiers(good).unwrap_or_else(|e| panic!("{e}"));
    let metrics: Vec<&str> = ids
        .iter()
        .filter(|(r, _)| *r == Role::Metric)
        .map(|(_, w)| w.as_str())
        .collect();
    assert_eq!(metrics, ["rpc_client_call_duration_seconds_bucket"]);
    assert!(ids.contains(&(Role::Label, "le".into())));
    assert!(ids.contains(&(Role::Label, "service_name".into())));

    // Binary operators with matching: the on(...) list holds labels.
    let join = "sum(protocluster_virtualactors) / on (service_name) group_left max(protocluster_members_count offset 5m)";
    assert_eq!(promql_problems(join, &known), Vec::<String>::new());

    let by_member = "sum by (member) (protocluster_members_count)";
    assert!(promql_problems(by_member, &known)[0].contains("\"member\""));
    let address = "protocluster_members_count{address=\"127.0.0.1:1\"}";
    assert!(promql_problems(address, &known)[0].contains("\"address\""));
    assert!(promql_identifiers("frobnicate(protocluster_members_count)").is_err());

    assert_eq!(
        variable_query(
            "label_values(protocluster_members_count{service_name=~\"$service_name\"}, service_instance_id)"
        ),
        (
            Some("protocluster_members_count{service_name=~\"$service_name\"}".into()),
            Some("service_instance_id".into())
        )
    );

    let otel = known_otel_names(&all_metrics());
    let nr_bad = "FROM Metric SELECT rate(sum(not.a.metric), 1 second) FACET service.name";
    let p = nrql_problems(nr_bad, &otel);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("not.a.metric"), "{p:?}");
    let nr_good = "FROM Metric SELECT percentile(rpc.client.call.duration, 50, 95, 99), rate(filter(sum(protoactor_future_started_count), WHERE kind = 'FizzService'), 1 second), uniqueCount(service.instance.id) WHERE service.name = 'client' AND metricName IN ('protocluster_members_count') FACET service.instance.id TIMESERIES";
    assert_eq!(nrql_problems(nr_good, &otel), Vec::<String>::new());
    assert_eq!(
        nrql_metric_names(nr_good).unwrap_or_else(|e| panic!("{e}")),
        [
            "rpc.client.call.duration",
            "protoactor_future_started_count",
            "protocluster_members_count"
        ]
    );
    let nr_name = "FROM Metric SELECT count(*) WHERE metricName = 'not_a_metric_total'";
    assert!(nrql_problems(nr_name, &otel)[0].contains("not_a_metric_total"));
    let nr_member = "FROM Metric SELECT latest(protocluster_members_count) FACET member";
    assert!(nrql_problems(nr_member, &otel)[0].contains("\"member\""));
    // Span queries name no metrics.
    let span = "FROM Span SELECT count(*) WHERE service.name = 'client' FACET name";
    assert_eq!(nrql_problems(span, &otel), Vec::<String>::new());
}

#[test]
fn the_grafana_dashboard_charts_only_defined_metrics_by_resource_attributes() {
    let metrics = all_metrics();
    let known = known_prometheus_names(&metrics);
    let dash = parse_json(GRAFANA);
    assert_eq!(dash["schemaVersion"], 39, "{GRAFANA}: schemaVersion");

    let mut targets = Vec::new();
    grafana_targets(&dash["panels"], &mut targets);
    assert!(
        targets.len() >= 10,
        "{GRAFANA}: only {} targets",
        targets.len()
    );

    let mut problems = Vec::new();
    let mut exprs = Vec::new();
    for (title, expr, legend) in &targets {
        for p in promql_problems(expr, &known) {
            problems.push(format!("{GRAFANA}, panel {title:?}: {p}"));
        }
        for banned in BANNED_ATTRIBUTES {
            if legend.contains(&format!("{{{{{banned}}}}}")) {
                problems.push(format!(
                    "{GRAFANA}, panel {title:?}: legend uses {{{{{banned}}}}}"
                ));
            }
        }
        exprs.push(expr.clone());
    }
    let mut variables = BTreeSet::new();
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or("(unnamed)");
        variables.insert(name.to_string());
        let query = match &v["query"] {
            Value::String(s) => s.clone(),
            Value::Object(o) => o
                .get("query")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            _ => String::new(),
        };
        if query.is_empty() {
            continue;
        }
        let (expr, label) = variable_query(&query);
        if let Some(label) = label
            && BANNED_ATTRIBUTES.contains(&label.as_str())
        {
            problems.push(format!(
                "{GRAFANA}, variable {name:?}: reads the label {label:?}"
            ));
        }
        if let Some(expr) = expr {
            for p in promql_problems(&expr, &known) {
                problems.push(format!("{GRAFANA}, variable {name:?}: {p}"));
            }
            exprs.push(expr);
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    for v in ["service_name", "service_instance_id"] {
        assert!(variables.contains(v), "{GRAFANA}: no template variable {v}");
    }
    let labels: BTreeSet<String> = exprs
        .iter()
        .flat_map(|e| promql_identifiers(e).unwrap_or_else(|err| panic!("{err}")))
        .filter(|(r, _)| *r == Role::Label)
        .map(|(_, w)| w)
        .collect();
    assert!(
        labels.contains("service_instance_id") && labels.contains("service_name"),
        "{GRAFANA}: no query uses service_name and service_instance_id"
    );

    // Every host metric the doc lists is charted.
    let used: BTreeSet<String> = exprs
        .iter()
        .flat_map(|e| promql_identifiers(e).unwrap_or_else(|err| panic!("{err}")))
        .filter(|(r, _)| *r == Role::Metric)
        .map(|(_, w)| w)
        .collect();
    for m in metric_table(HOST) {
        assert!(
            prometheus_names(&m).iter().any(|n| used.contains(n)),
            "{GRAFANA}: deploy/host-metrics.md lists {} but no panel uses it",
            m.name
        );
    }
}

#[test]
fn the_new_relic_dashboard_queries_only_defined_metrics_by_resource_attributes() {
    let metrics = all_metrics();
    let known = known_otel_names(&metrics);
    let dash = parse_json(NEW_RELIC);
    for key in ["name", "permissions", "pages"] {
        assert!(!dash[key].is_null(), "{NEW_RELIC}: no {key}");
    }
    let queries = new_relic_queries(&dash);
    assert!(
        queries.len() >= 10,
        "{NEW_RELIC}: only {} queries",
        queries.len()
    );

    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for (title, q) in &queries {
        for p in nrql_problems(q, &known) {
            problems.push(format!("{NEW_RELIC}, widget {title:?}: {p}"));
        }
        used.extend(nrql_metric_names(q).unwrap_or_default());
    }
    for page in dash["pages"].as_array().into_iter().flatten() {
        for w in page["widgets"].as_array().into_iter().flatten() {
            let title = w["title"].as_str().unwrap_or("(untitled)");
            if w["visualization"]["id"].as_str().is_none() {
                problems.push(format!(
                    "{NEW_RELIC}, widget {title:?}: no visualization.id"
                ));
            }
            for q in w["rawConfiguration"]["nrqlQueries"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if !q["accountIds"].is_array() {
                    problems.push(format!("{NEW_RELIC}, widget {title:?}: no accountIds"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    let mentions = |attr: &str| {
        queries.iter().any(|(_, q)| {
            nrql_tokens(q)
                .iter()
                .any(|t| *t == Tok::Ident(attr.to_string()))
        })
    };
    assert!(
        mentions("service.instance.id") && mentions("service.name"),
        "{NEW_RELIC}: no query uses service.name and service.instance.id"
    );
    for m in metric_table(HOST) {
        assert!(
            used.contains(&m.name),
            "{NEW_RELIC}: deploy/host-metrics.md lists {} but no widget uses it",
            m.name
        );
    }
}
