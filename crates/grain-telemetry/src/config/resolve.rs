//! Resolution: the layers applied in order — defaults, then the New Relic preset, then
//! the standard `OTEL_*` environment variables, then command-line overrides — each
//! free to override the one before; the result is validated last.

use std::time::Duration;

use super::TemporalityPreference;
use super::env::{self, EnvLayer, Vars};
use super::{Compression, HeaderValue, NewRelicRegion, Overrides, TelemetryConfig};
use crate::TelemetryError;

impl TelemetryConfig {
    /// Reads the process environment under `overrides`.
    pub fn from_env(overrides: &Overrides) -> Result<Self, TelemetryError> {
        Self::from_lookup(|k| std::env::var(k).ok(), overrides)
    }

    /// Reads settings through `lookup` (an environment) under `overrides`.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        overrides: &Overrides,
    ) -> Result<Self, TelemetryError> {
        let vars = Vars(&lookup);
        let mut config = defaults();
        if env::sdk_disabled(&vars) {
            return Ok(config);
        }
        env::check_protocol(&vars)?;
        apply_new_relic(&mut config, &vars, overrides)?;
        apply_env(&mut config, env::read(&vars)?);
        apply_overrides(&mut config, overrides)?;
        config.validate()?;
        Ok(config)
    }
}

/// The bottom layer: no export, gzip, a 1 s interval, a 10 s timeout, cumulative.
fn defaults() -> TelemetryConfig {
    TelemetryConfig {
        endpoint: None,
        headers: Vec::new(),
        compression: Compression::Gzip,
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(10),
        temporality: TemporalityPreference::Cumulative,
        service_name: None,
        resource_attributes: Vec::new(),
        new_relic: false,
    }
}

/// With `NEW_RELIC_LICENSE_KEY` set: the region's endpoint, the key as the `api-key`
/// header, and delta temporality. The region (flag over variable) is checked even
/// without a key.
fn apply_new_relic(
    config: &mut TelemetryConfig,
    vars: &Vars<'_>,
    overrides: &Overrides,
) -> Result<(), TelemetryError> {
    let license = vars.get(env::NEW_RELIC_LICENSE_KEY);
    let region = match overrides
        .new_relic_region
        .as_deref()
        .map(str::to_string)
        .or_else(|| vars.get(env::NEW_RELIC_REGION))
    {
        Some(r) => env::parse_region(&r)?,
        None => NewRelicRegion::Us,
    };
    if let Some(key) = license {
        config.new_relic = true;
        config.endpoint = Some(region.metrics_endpoint().to_string());
        config.headers.push(("api-key".into(), HeaderValue(key)));
        config.temporality = TemporalityPreference::Delta;
    }
    Ok(())
}

/// The standard variables, over the preset.
fn apply_env(config: &mut TelemetryConfig, layer: EnvLayer) {
    if let Some(e) = layer.endpoint {
        config.endpoint = Some(e);
    }
    for (k, v) in layer.headers {
        config.set_header(k, v);
    }
    if let Some(c) = layer.compression {
        config.compression = c;
    }
    if let Some(t) = layer.timeout {
        config.timeout = t;
    }
    if let Some(i) = layer.interval {
        config.interval = i;
    }
    if let Some(t) = layer.temporality {
        config.temporality = t;
    }
    if let Some(r) = layer.resource_attributes {
        config.resource_attributes = r;
    }
    if let Some(n) = layer.service_name {
        config.service_name = Some(n);
    }
}

/// Command-line values, over everything else (empty strings are ignored).
fn apply_overrides(
    config: &mut TelemetryConfig,
    overrides: &Overrides,
) -> Result<(), TelemetryError> {
    if let Some(e) = overrides.endpoint.clone().filter(|e| !e.is_empty()) {
        config.endpoint = Some(e);
    }
    for h in &overrides.headers {
        for (k, v) in env::parse_pairs("--otlp-header", h)? {
            config.set_header(k, v);
        }
    }
    if let Some(i) = overrides.interval {
        config.interval = i;
    }
    if let Some(n) = overrides.service_name.clone().filter(|n| !n.is_empty()) {
        config.service_name = Some(n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(
        vars: &[(&str, &str)],
        overrides: &Overrides,
    ) -> Result<TelemetryConfig, TelemetryError> {
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
}
