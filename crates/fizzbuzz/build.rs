//! Generates the FizzBuzz grains and clients from `proto/fizzbuzz/v1/fizzbuzz.proto`,
//! the diagnostic probe grain from `proto/fizzbuzz/v1/probe.proto`, and the plain tonic
//! services of the benchmark's baselines from `proto/bench/v1/bench.proto` (with
//! `protox`: no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    grain_build::compile(
        &[
            "../../proto/fizzbuzz/v1/fizzbuzz.proto",
            "../../proto/fizzbuzz/v1/probe.proto",
        ],
        &["../../proto"],
    )?;
    let bench = "../../proto/bench/v1/bench.proto";
    println!("cargo:rerun-if-changed={bench}");
    let fds = protox::compile([bench], ["../../proto"]).map_err(|e| format!("{e:?}"))?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    // The compiler's version, for the benchmark's report of where it ran.
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("-V")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "rustc (unknown version)".into());
    println!("cargo:rustc-env=FIZZBUZZ_RUSTC_VERSION={version}");
    Ok(())
}
