//! A tiny run of `fizzbuzz bench` (`--quick`): every figure and its baseline can be
//! measured and is reported as JSON, and the picture is written as SVG. The figures of
//! a debug build and of tiny counts mean nothing; the full run is `cargo run --release
//! --bin fizzbuzz -- bench` (not part of the tests).

mod common;

const FIZZBUZZ: &str = env!("CARGO_BIN_EXE_fizzbuzz");

async fn bench(args: &[&str]) -> String {
    let mut c = tokio::process::Command::new(FIZZBUZZ);
    c.arg("bench").args(args);
    common::clean_env(&mut c);
    let out = c
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run fizzbuzz bench: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fizzbuzz bench failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn a_quick_bench_measures_every_figure_against_its_baseline() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let svg_path = dir.path().join("bench.svg");
    let svg_arg = svg_path.to_string_lossy().into_owned();
    let json = bench(&["--quick", "--json", "--plot", &svg_arg]).await;
    let report: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("not JSON ({e}): {json}"));
    let figures = report["figures"]
        .as_array()
        .unwrap_or_else(|| panic!("no figures: {json}"));
    let keys: Vec<&str> = figures.iter().filter_map(|f| f["key"].as_str()).collect();
    for want in [
        "unary_serial_p50_ms",
        "stream_serial_p50_ms",
        "unary_256_calls_per_s",
        "stream_256_msgs_per_s",
        "plain_fizzbuzz_numbers_per_s",
        "grain_serial_p50_ms",
        "grain_default_numbers_per_s",
        "grain_best_numbers_per_s",
        "grain_metrics_numbers_per_s",
        "grain_traced_numbers_per_s",
        "grain_tls_numbers_per_s",
        "node_bytes_per_idle_activation",
        "node_activations_per_s",
        "node_shutdown_s",
    ] {
        assert!(keys.contains(&want), "{want} missing from {keys:?}");
    }
    for f in figures {
        let median = f["median"].as_f64().unwrap_or(f64::NAN);
        assert!(median.is_finite() && median > 0.0, "{f}");
        assert_eq!(f["runs"].as_array().map(Vec::len), Some(1), "{f}");
    }
    let ratios = report["ratios"]
        .as_array()
        .unwrap_or_else(|| panic!("no ratios: {json}"));
    assert_eq!(ratios.len(), 8, "{json}");
    for r in ratios {
        let v = r["value"].as_f64().unwrap_or(f64::NAN);
        assert!(v.is_finite() && v > 0.0, "{r}");
    }
    let targets = report["targets"]
        .as_array()
        .unwrap_or_else(|| panic!("no targets: {json}"));
    assert_eq!(targets.len(), 3, "{json}");
    for t in targets {
        let v = t["value"].as_f64().unwrap_or(f64::NAN);
        assert!(v.is_finite() && v > 0.0, "{t}");
        assert!(t["target"].as_str().is_some_and(|s| !s.is_empty()), "{t}");
    }
    // The curves: three series of latency, three of throughput at every point.
    let curves = &report["curves"];
    let inflight = curves["inflight"].as_array().map_or(0, Vec::len);
    assert_eq!(inflight, 5, "{json}");
    for (panel, want) in [("latency", 3), ("throughput", 3)] {
        let series = curves[panel]
            .as_array()
            .unwrap_or_else(|| panic!("no {panel} curves: {json}"));
        assert_eq!(series.len(), want, "{json}");
    }
    for s in curves["throughput"].as_array().into_iter().flatten() {
        assert_eq!(s["points"].as_array().map(Vec::len), Some(inflight), "{s}");
    }
    let svg = std::fs::read_to_string(&svg_path)
        .unwrap_or_else(|e| panic!("--plot wrote no {}: {e}", svg_path.display()));
    assert!(svg.trim_start().starts_with("<svg"), "not SVG: {svg}");
    for name in ["tonic unary", "tonic stream (one)", "grain call"] {
        assert!(svg.contains(name), "the picture does not name {name}");
    }
    assert!(report["machine"]["cores"].as_u64().is_some_and(|c| c >= 1));
    assert!(
        report["machine"]["rustc"]
            .as_str()
            .is_some_and(|v| v.starts_with("rustc")),
        "{json}"
    );
}
