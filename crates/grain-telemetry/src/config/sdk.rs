//! The SDK variables: the sampler (`OTEL_TRACES_SAMPLER*`), the propagators
//! (`OTEL_PROPAGATORS`) and the batch processors (`OTEL_BSP_*`, `OTEL_BLRP_*`). Pure
//! functions over a lookup, like `env`; unset means the specification's default, and
//! anything malformed or unsupported is an error naming the variable.

use std::time::Duration;

use super::env::{self, Vars};
use super::{BatchSettings, PropagatorKind, SamplerConfig};
use crate::TelemetryError;

/// The largest queue accepted: the SDK allocates the whole queue up front.
const MAX_QUEUE_SIZE: usize = 1_000_000;

/// What the SDK variables set (each already defaulted).
pub(super) struct SdkLayer {
    /// The sampler.
    pub(super) sampler: SamplerConfig,
    /// The propagators, in order.
    pub(super) propagators: Vec<PropagatorKind>,
    /// The batch span processor.
    pub(super) span_batch: BatchSettings,
    /// The batch log record processor.
    pub(super) log_batch: BatchSettings,
}

/// The settings when no variable is set.
pub(super) fn defaults() -> SdkLayer {
    SdkLayer {
        sampler: SamplerConfig::ParentBasedAlwaysOn,
        propagators: vec![PropagatorKind::TraceContext, PropagatorKind::Baggage],
        span_batch: BatchSettings::SPANS,
        log_batch: BatchSettings::LOGS,
    }
}

/// Reads the SDK variables; the first malformed one is the error.
pub(super) fn read(vars: &Vars<'_>) -> Result<SdkLayer, TelemetryError> {
    let mut layer = defaults();
    layer.sampler = sampler(vars)?;
    if let Some(p) = vars.get(env::PROPAGATORS) {
        layer.propagators = propagators(&p)?;
    }
    layer.span_batch = batch(
        vars,
        BatchSettings::SPANS,
        [
            env::BSP_SCHEDULE_DELAY,
            env::BSP_MAX_QUEUE_SIZE,
            env::BSP_MAX_EXPORT_BATCH_SIZE,
            env::BSP_EXPORT_TIMEOUT,
        ],
    )?;
    layer.log_batch = batch(
        vars,
        BatchSettings::LOGS,
        [
            env::BLRP_SCHEDULE_DELAY,
            env::BLRP_MAX_QUEUE_SIZE,
            env::BLRP_MAX_EXPORT_BATCH_SIZE,
            env::BLRP_EXPORT_TIMEOUT,
        ],
    )?;
    Ok(layer)
}

const SAMPLERS: &str = "always_on, always_off, traceidratio, parentbased_always_on, \
                        parentbased_always_off or parentbased_traceidratio";

/// `OTEL_TRACES_SAMPLER` (any case) with its ratio from `OTEL_TRACES_SAMPLER_ARG`.
fn sampler(vars: &Vars<'_>) -> Result<SamplerConfig, TelemetryError> {
    let Some(name) = vars.get(env::TRACES_SAMPLER) else {
        return Ok(SamplerConfig::ParentBasedAlwaysOn);
    };
    let ratio = || -> Result<f64, TelemetryError> {
        let Some(arg) = vars.get(env::TRACES_SAMPLER_ARG) else {
            return Ok(1.0);
        };
        arg.parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .ok_or_else(|| {
                TelemetryError::Config(format!(
                    "{}: {arg:?} is not a ratio between 0 and 1",
                    env::TRACES_SAMPLER_ARG
                ))
            })
    };
    match name.to_ascii_lowercase().as_str() {
        "always_on" => Ok(SamplerConfig::AlwaysOn),
        "always_off" => Ok(SamplerConfig::AlwaysOff),
        "traceidratio" => Ok(SamplerConfig::TraceIdRatio(ratio()?)),
        "parentbased_always_on" => Ok(SamplerConfig::ParentBasedAlwaysOn),
        "parentbased_always_off" => Ok(SamplerConfig::ParentBasedAlwaysOff),
        "parentbased_traceidratio" => Ok(SamplerConfig::ParentBasedTraceIdRatio(ratio()?)),
        other => Err(TelemetryError::Config(format!(
            "{}={other}: unsupported sampler (use {SAMPLERS})",
            env::TRACES_SAMPLER
        ))),
    }
}

/// A comma list of propagators (any case; duplicates kept once, in order). `none`
/// stands alone.
fn propagators(list: &str) -> Result<Vec<PropagatorKind>, TelemetryError> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let kind = match item.to_ascii_lowercase().as_str() {
            "tracecontext" => PropagatorKind::TraceContext,
            "baggage" => PropagatorKind::Baggage,
            "b3" => PropagatorKind::B3,
            "b3multi" => PropagatorKind::B3Multi,
            "none" => PropagatorKind::None,
            other => {
                return Err(TelemetryError::Config(format!(
                    "{}: unsupported propagator {other:?} (supported: tracecontext, baggage, \
                     b3, b3multi, none)",
                    env::PROPAGATORS
                )));
            }
        };
        if !out.contains(&kind) {
            out.push(kind);
        }
    }
    if out.contains(&PropagatorKind::None) && out.len() > 1 {
        return Err(TelemetryError::Config(format!(
            "{}: none cannot be combined with other propagators",
            env::PROPAGATORS
        )));
    }
    if out.is_empty() {
        return Ok(defaults().propagators);
    }
    Ok(out)
}

/// A batch processor's four variables (delay, queue, batch, timeout) over `default`;
/// the batch size is capped at the queue size.
fn batch(
    vars: &Vars<'_>,
    default: BatchSettings,
    [delay, queue, batch, timeout]: [&'static str; 4],
) -> Result<BatchSettings, TelemetryError> {
    let mut settings = default;
    let ms = |var: &'static str, fallback: Duration| -> Result<Duration, TelemetryError> {
        match vars.get(var) {
            Some(v) => env::millis(var, &v),
            None => Ok(fallback),
        }
    };
    let count = |var: &'static str, fallback: usize| -> Result<usize, TelemetryError> {
        let Some(v) = vars.get(var) else {
            return Ok(fallback);
        };
        v.parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_QUEUE_SIZE).contains(n))
            .ok_or_else(|| {
                TelemetryError::Config(format!(
                    "{var}: {v:?} is not a whole number from 1 to {MAX_QUEUE_SIZE}"
                ))
            })
    };
    settings.schedule_delay = ms(delay, settings.schedule_delay)?;
    settings.max_queue_size = count(queue, settings.max_queue_size)?;
    settings.max_export_batch_size =
        count(batch, settings.max_export_batch_size)?.min(settings.max_queue_size);
    settings.export_timeout = ms(timeout, settings.export_timeout)?;
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn layer(vars: &[(&str, &str)]) -> Result<SdkLayer, TelemetryError> {
        let map: HashMap<&str, &str> = vars.iter().copied().collect();
        let lookup = |k: &str| map.get(k).map(|v| v.to_string());
        read(&Vars(&lookup))
    }

    fn error(vars: &[(&str, &str)]) -> String {
        layer(vars).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn unset_means_the_specification_defaults() {
        let l = layer(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l.sampler, SamplerConfig::ParentBasedAlwaysOn);
        assert_eq!(
            l.propagators,
            vec![PropagatorKind::TraceContext, PropagatorKind::Baggage]
        );
        assert_eq!(l.span_batch, BatchSettings::SPANS);
        assert_eq!(l.log_batch, BatchSettings::LOGS);
    }

    #[test]
    fn every_supported_sampler_is_read_in_any_case() {
        let cases: &[(&str, Option<&str>, SamplerConfig)] = &[
            ("always_on", None, SamplerConfig::AlwaysOn),
            ("ALWAYS_OFF", None, SamplerConfig::AlwaysOff),
            (
                "traceidratio",
                Some("0.25"),
                SamplerConfig::TraceIdRatio(0.25),
            ),
            ("TraceIdRatio", None, SamplerConfig::TraceIdRatio(1.0)),
            (
                "parentbased_always_on",
                None,
                SamplerConfig::ParentBasedAlwaysOn,
            ),
            (
                "parentbased_always_off",
                None,
                SamplerConfig::ParentBasedAlwaysOff,
            ),
            (
                "parentbased_traceidratio",
                Some("0"),
                SamplerConfig::ParentBasedTraceIdRatio(0.0),
            ),
            // An argument is ignored by the samplers that take none.
            ("always_on", Some("not a number"), SamplerConfig::AlwaysOn),
        ];
        for (name, arg, want) in cases {
            let mut vars = vec![(env::TRACES_SAMPLER, *name)];
            if let Some(a) = arg {
                vars.push((env::TRACES_SAMPLER_ARG, a));
            }
            let l = layer(&vars).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(l.sampler, *want, "{name} {arg:?}");
        }
    }

    #[test]
    fn bad_or_unsupported_samplers_are_errors_naming_the_variable() {
        for name in [
            "jaeger_remote",
            "parentbased_jaeger_remote",
            "xray",
            "sometimes",
        ] {
            let e = error(&[(env::TRACES_SAMPLER, name)]);
            assert!(e.contains(env::TRACES_SAMPLER), "{name}: {e}");
            assert!(e.contains("parentbased_traceidratio"), "{name}: {e}");
        }
        for arg in ["1.5", "-0.1", "half", "NaN"] {
            let e = error(&[
                (env::TRACES_SAMPLER, "traceidratio"),
                (env::TRACES_SAMPLER_ARG, arg),
            ]);
            assert!(e.contains(env::TRACES_SAMPLER_ARG), "{arg}: {e}");
        }
    }

    #[test]
    fn propagators_are_a_comma_list_and_unknown_ones_are_errors() {
        let l = layer(&[(env::PROPAGATORS, " B3 , b3multi,,tracecontext,b3")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            l.propagators,
            vec![
                PropagatorKind::B3,
                PropagatorKind::B3Multi,
                PropagatorKind::TraceContext
            ]
        );
        let l = layer(&[(env::PROPAGATORS, "none")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l.propagators, vec![PropagatorKind::None]);
        for list in [
            "jaeger",
            "tracecontext,xray",
            "ottrace",
            "tracecontex",
            "none,b3",
        ] {
            let e = error(&[(env::PROPAGATORS, list)]);
            assert!(e.contains(env::PROPAGATORS), "{list}: {e}");
        }
        let e = error(&[(env::PROPAGATORS, "jaeger")]);
        assert!(e.contains("b3multi") && e.contains("\"jaeger\""), "{e}");
    }

    #[test]
    fn batch_settings_are_read_checked_and_the_batch_is_capped_at_the_queue() {
        let l = layer(&[
            (env::BSP_SCHEDULE_DELAY, "250"),
            (env::BSP_MAX_QUEUE_SIZE, "100"),
            (env::BSP_MAX_EXPORT_BATCH_SIZE, "400"),
            (env::BSP_EXPORT_TIMEOUT, "1500"),
            (env::BLRP_MAX_QUEUE_SIZE, "8"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l.span_batch.schedule_delay, Duration::from_millis(250));
        assert_eq!(l.span_batch.max_queue_size, 100);
        assert_eq!(l.span_batch.max_export_batch_size, 100);
        assert_eq!(l.span_batch.export_timeout, Duration::from_millis(1500));
        assert_eq!(l.log_batch.max_queue_size, 8);
        assert_eq!(l.log_batch.max_export_batch_size, 8);
        assert_eq!(
            l.log_batch.schedule_delay,
            BatchSettings::LOGS.schedule_delay
        );
        for var in [
            env::BSP_SCHEDULE_DELAY,
            env::BSP_MAX_QUEUE_SIZE,
            env::BSP_MAX_EXPORT_BATCH_SIZE,
            env::BSP_EXPORT_TIMEOUT,
            env::BLRP_SCHEDULE_DELAY,
            env::BLRP_MAX_QUEUE_SIZE,
            env::BLRP_MAX_EXPORT_BATCH_SIZE,
            env::BLRP_EXPORT_TIMEOUT,
        ] {
            for bad in ["0", "-5", "lots", "99999999999999999999"] {
                let e = error(&[(var, bad)]);
                assert!(e.contains(var), "{var}={bad}: {e}");
            }
        }
    }
}
