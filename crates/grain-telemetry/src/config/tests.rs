//! Resolution tests: the layers over a lookup map (no process environment).

use std::time::Duration;

use super::env;
use super::{
    Compression, Overrides, PropagatorKind, SamplerConfig, TelemetryConfig, TemporalityPreference,
};
use crate::TelemetryError;
use std::collections::HashMap;

fn config(vars: &[(&str, &str)], overrides: &Overrides) -> Result<TelemetryConfig, TelemetryError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    TelemetryConfig::from_lookup(|k| map.get(k).cloned(), overrides)
}

#[test]
fn no_endpoint_means_no_export() {
    let c = config(&[], &Overrides::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.endpoint, None);
    assert_eq!(c.interval, Duration::from_secs(1));
    assert_eq!(c.compression, Compression::Gzip);
}

#[test]
fn the_base_endpoint_gets_v1_metrics_and_the_metrics_endpoint_is_used_as_is() {
    let c = config(
        &[(env::OTLP_ENDPOINT, "http://collector:4318/")],
        &Overrides::default(),
    );
    assert_eq!(
        c.ok().and_then(|c| c.endpoint).as_deref(),
        Some("http://collector:4318/v1/metrics")
    );
    let c = config(
        &[
            (env::OTLP_ENDPOINT, "http://a:4318"),
            (env::OTLP_METRICS_ENDPOINT, "http://b:9/custom"),
        ],
        &Overrides::default(),
    );
    assert_eq!(
        c.ok().and_then(|c| c.endpoint).as_deref(),
        Some("http://b:9/custom")
    );
}

#[test]
fn the_new_relic_preset_gives_endpoint_api_key_and_delta() {
    let c = config(
        &[(env::NEW_RELIC_LICENSE_KEY, "nr-key-123")],
        &Overrides::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.endpoint.as_deref(),
        Some("https://otlp.nr-data.net:4318/v1/metrics")
    );
    assert_eq!(c.header("api-key"), Some("nr-key-123"));
    assert_eq!(c.temporality, TemporalityPreference::Delta);
    assert!(c.new_relic);
    let eu = config(
        &[
            (env::NEW_RELIC_LICENSE_KEY, "k"),
            (env::NEW_RELIC_REGION, "EU"),
        ],
        &Overrides::default(),
    );
    assert_eq!(
        eu.ok().and_then(|c| c.endpoint).as_deref(),
        Some("https://otlp.eu01.nr-data.net:4318/v1/metrics")
    );
    assert!(
        config(
            &[
                (env::NEW_RELIC_LICENSE_KEY, "k"),
                (env::NEW_RELIC_REGION, "mars")
            ],
            &Overrides::default()
        )
        .is_err()
    );
}

#[test]
fn flags_win_over_environment_which_wins_over_the_preset() {
    let vars = [
        (env::NEW_RELIC_LICENSE_KEY, "k"),
        (env::OTLP_ENDPOINT, "http://env:4318"),
        (env::TEMPORALITY, "cumulative"),
        (env::EXPORT_INTERVAL, "5000"),
        (env::OTLP_HEADERS, "x-team=blue,api-key=from%20env"),
    ];
    let o = Overrides {
        endpoint: Some("http://flag:1/v1/metrics".into()),
        headers: vec!["x-team=red".into()],
        interval: Some(Duration::from_millis(250)),
        ..Overrides::default()
    };
    let c = config(&vars, &o).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.endpoint.as_deref(), Some("http://flag:1/v1/metrics"));
    assert_eq!(c.header("x-team"), Some("red"));
    assert_eq!(c.header("api-key"), Some("from env"));
    assert_eq!(c.temporality, TemporalityPreference::Cumulative);
    assert_eq!(c.interval, Duration::from_millis(250));
}

#[test]
fn bad_values_are_errors_that_name_the_variable() {
    let cases: &[(&str, &str, &str)] = &[
        (env::OTLP_PROTOCOL, "grpc", "http/protobuf"),
        (env::OTLP_COMPRESSION, "brotli", env::OTLP_COMPRESSION),
        (env::EXPORT_INTERVAL, "soon", env::EXPORT_INTERVAL),
        (env::TEMPORALITY, "sometimes", env::TEMPORALITY),
        (env::OTLP_HEADERS, "novalue", env::OTLP_HEADERS),
        (env::OTLP_ENDPOINT, "collector:4318", "http://"),
    ];
    for (k, v, named) in cases {
        let e = config(&[(k, v)], &Overrides::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains(named), "{k}={v}: {e}");
    }
}

#[test]
fn header_values_never_show_in_debug_or_errors() {
    let c = config(
        &[(env::NEW_RELIC_LICENSE_KEY, "very-secret-license")],
        &Overrides::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(!format!("{c:?}").contains("very-secret"));
    let e = config(
        &[(env::OTLP_HEADERS, "api-keyvery-secret-license")],
        &Overrides::default(),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(!e.contains("secret-license"), "{e}");
}

#[test]
fn service_name_and_resource_attributes_follow_the_spec() {
    let c = config(
        &[
            (
                env::RESOURCE_ATTRIBUTES,
                "service.name=a,deployment.environment=dev",
            ),
            (env::SERVICE_NAME, "b"),
        ],
        &Overrides::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.service_name.as_deref(), Some("b"));
    assert!(
        c.resource_attributes
            .contains(&("deployment.environment".into(), "dev".into()))
    );
    let off = config(
        &[
            (env::SDK_DISABLED, "true"),
            (env::NEW_RELIC_LICENSE_KEY, "k"),
        ],
        &Overrides::default(),
    );
    assert_eq!(off.ok().and_then(|c| c.endpoint), None);
}

#[test]
fn traces_and_logs_get_their_paths_on_the_base_and_their_own_endpoints_as_is() {
    let c = config(
        &[
            (env::OTLP_ENDPOINT, "http://collector:4318/"),
            (env::OTLP_LOGS_ENDPOINT, "http://logs:9/custom"),
        ],
        &Overrides::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.traces.endpoint.as_deref(),
        Some("http://collector:4318/v1/traces")
    );
    assert_eq!(c.logs.endpoint.as_deref(), Some("http://logs:9/custom"));
    assert_eq!(
        c.endpoint.as_deref(),
        Some("http://collector:4318/v1/metrics")
    );
    let only_traces = config(
        &[(env::OTLP_TRACES_ENDPOINT, "http://t:4318/v1/traces")],
        &Overrides::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(only_traces.traces.endpoint.is_some());
    assert_eq!(only_traces.endpoint, None);
    assert_eq!(only_traces.logs.endpoint, None);
}

#[test]
fn the_new_relic_preset_covers_every_signal() {
    for (region, host) in [("us", "otlp.nr-data.net"), ("eu", "otlp.eu01.nr-data.net")] {
        let c = config(
            &[
                (env::NEW_RELIC_LICENSE_KEY, "nr-key"),
                (env::NEW_RELIC_REGION, region),
            ],
            &Overrides::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        for (signal, path) in [(&c.traces, "/v1/traces"), (&c.logs, "/v1/logs")] {
            assert_eq!(
                signal.endpoint.as_deref(),
                Some(format!("https://{host}:4318{path}").as_str())
            );
            assert_eq!(signal.header("api-key"), Some("nr-key"));
        }
        assert_eq!(c.header("api-key"), Some("nr-key"));
    }
}

#[test]
fn the_flag_endpoint_is_a_base_for_every_signal_and_flag_headers_go_everywhere() {
    let vars = [
        (env::OTLP_TRACES_ENDPOINT, "http://env-traces:1/x"),
        (env::OTLP_LOGS_HEADERS, "x-team=blue"),
    ];
    for flag in [
        "http://flag:4318",
        "http://flag:4318/",
        "http://flag:4318/v1/metrics",
        "http://flag:4318/v1/traces/",
        "http://flag:4318/v1/logs",
    ] {
        let o = Overrides {
            endpoint: Some(flag.into()),
            headers: vec!["x-team=red,x-flag=1".into()],
            ..Overrides::default()
        };
        let c = config(&vars, &o).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.endpoint.as_deref(),
            Some("http://flag:4318/v1/metrics"),
            "{flag}"
        );
        assert_eq!(
            c.traces.endpoint.as_deref(),
            Some("http://flag:4318/v1/traces"),
            "{flag}"
        );
        assert_eq!(
            c.logs.endpoint.as_deref(),
            Some("http://flag:4318/v1/logs"),
            "{flag}"
        );
        assert_eq!(c.logs.header("x-team"), Some("red"));
        for h in [c.header("x-flag"), c.traces.header("x-flag")] {
            assert_eq!(h, Some("1"));
        }
    }
    let prefixed = Overrides {
        endpoint: Some("https://gw.example/otlp/v1/metrics".into()),
        ..Overrides::default()
    };
    let c = config(&[], &prefixed).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.traces.endpoint.as_deref(),
        Some("https://gw.example/otlp/v1/traces")
    );
}

#[test]
fn exporter_none_turns_its_signal_off_even_under_flags_and_the_sdk_switch_all() {
    let o = Overrides {
        endpoint: Some("http://flag:4318".into()),
        ..Overrides::default()
    };
    let c = config(
        &[
            (env::TRACES_EXPORTER, "none"),
            (env::METRICS_EXPORTER, "none"),
        ],
        &o,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.traces.endpoint, None);
    assert_eq!(c.endpoint, None);
    assert_eq!(c.logs.endpoint.as_deref(), Some("http://flag:4318/v1/logs"));
    let off = config(
        &[
            (env::SDK_DISABLED, "TRUE"),
            (env::OTLP_ENDPOINT, "http://c:4318"),
        ],
        &o,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(!off.exports_anything());
}

#[test]
fn a_bad_traces_or_logs_endpoint_is_an_error_naming_the_signal() {
    for (var, signal) in [
        (env::OTLP_TRACES_ENDPOINT, "traces"),
        (env::OTLP_LOGS_ENDPOINT, "logs"),
    ] {
        let e = config(&[(var, "collector:4318")], &Overrides::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains(&format!("{signal} endpoint")) && e.contains("http://"),
            "{var}: {e}"
        );
    }
}

#[test]
fn sampler_propagators_and_batching_reach_the_configuration() {
    let c = config(
        &[
            (env::TRACES_SAMPLER, "parentbased_traceidratio"),
            (env::TRACES_SAMPLER_ARG, "0.5"),
            (env::PROPAGATORS, "b3"),
            (env::BSP_MAX_QUEUE_SIZE, "64"),
        ],
        &Overrides::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.sampler, SamplerConfig::ParentBasedTraceIdRatio(0.5));
    assert_eq!(c.propagators, vec![PropagatorKind::B3]);
    assert_eq!(c.span_batch.max_queue_size, 64);
    let e = config(&[(env::PROPAGATORS, "xray")], &Overrides::default())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains(env::PROPAGATORS), "{e}");
}

#[test]
fn no_signal_shows_a_header_value_in_debug() {
    let c = config(
        &[
            (env::NEW_RELIC_LICENSE_KEY, "very-secret-license"),
            (env::OTLP_TRACES_HEADERS, "x-token=another-secret"),
        ],
        &Overrides::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let shown = format!("{c:?} {:?} {:?}", c.traces, c.logs);
    assert!(!shown.contains("very-secret"), "{shown}");
    assert!(!shown.contains("another-secret"), "{shown}");
    assert!(shown.contains("x-token"), "{shown}");
}

#[test]
fn debug_shows_endpoints_without_their_credentials() {
    let c = config(
        &[(
            env::OTLP_ENDPOINT,
            "https://user:very-secret-pass@collector:4318",
        )],
        &Overrides::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let shown = format!("{c:?}");
    assert!(!shown.contains("very-secret-pass"), "{shown}");
    assert!(shown.contains("collector:4318/v1/traces"), "{shown}");
    let traces = format!("{:?}", c.traces);
    assert!(!traces.contains("very-secret-pass"), "{traces}");
}
