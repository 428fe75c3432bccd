//! What the generator does not support is a build error that names file, service and
//! method, never broken code.

use std::path::Path;

fn generate(dir: &Path, proto: &str) -> Result<(), grain_build::BuildError> {
    std::fs::write(dir.join("bad.proto"), proto).unwrap_or_else(|e| panic!("{e}"));
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap_or_else(|e| panic!("{e}"));
    grain_build::configure()
        .out_dir(&out)
        .emit_rerun_if_changed(false)
        .compile(&[dir.join("bad.proto")], &[dir])
}

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
}

const MSG: &str = "syntax = \"proto3\"; package bad.v1; message M { int64 n = 1; }\n";

#[test]
fn a_client_streaming_rpc_is_a_build_error_naming_file_service_and_method() {
    let dir = temp();
    let proto = format!("{MSG}service Chat {{ rpc Talk(stream M) returns (M); }}\n");
    let err = generate(dir.path(), &proto)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("bad.proto"), "{err}");
    assert!(err.contains("bad.v1.Chat"), "{err}");
    assert!(err.contains("rpc Talk is client-streaming"), "{err}");
}

#[test]
fn a_server_streaming_rpc_is_a_build_error() {
    let dir = temp();
    let proto = format!("{MSG}service Feed {{ rpc Watch(M) returns (stream M); }}\n");
    let err = generate(dir.path(), &proto)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("rpc Watch is server-streaming"), "{err}");
}

#[test]
fn an_rpc_named_like_a_client_method_is_a_build_error() {
    let dir = temp();
    let proto = format!("{MSG}service Maker {{ rpc New(M) returns (M); }}\n");
    let err = generate(dir.path(), &proto)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("rpc New") && err.contains("rename the rpc"),
        "{err}"
    );
}

#[test]
fn a_syntax_error_is_a_build_error_naming_the_file() {
    let dir = temp();
    let err = generate(dir.path(), "syntax = \"proto3\"; message {").err();
    let err = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("bad.proto"), "{err}");
}
