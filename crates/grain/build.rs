//! Compiles `proto/grain/v1/remote.proto` with `protox` (pure Rust), so no system
//! `protoc` is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let file = root.join("grain/v1/remote.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&root]).map_err(|e| format!("{e:?}"))?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".grain.v1")
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}
