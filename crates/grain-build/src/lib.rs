//! # grain-build — typed grains from `.proto` services
//!
//! A build-time library for `build.rs`. From the services in the given `.proto` files it
//! generates, next to the prost messages of the same package, for each service `S`:
//!
//! - a trait `S` with one async method per rpc (`request` + [grain context] → response
//!   or grain error) and optional lifecycle hooks `activated` / `deactivated`;
//! - `SKind::new(factory)`, the kind registration (kind name = service name, method
//!   path constants `SKind::<METHOD>_PATH`, and `SKind::<METHOD>_IDEMPOTENT`, see
//!   below), returning a runtime `Kind` whose options (idle timeout) can be set;
//! - `SClient::new(&cluster, "identity")`, a typed client with one async method per rpc,
//!   plus `<method>_with(request, &options)` for per-call options.
//!
//! A method declared with protobuf's standard option
//! `option idempotency_level = NO_SIDE_EFFECTS;` (or `IDEMPOTENT`) is idempotent: its
//! `<METHOD>_IDEMPOTENT` is `true`, and the typed client has the runtime retry it after
//! an attempt that may have run (link broken after the call was written, attempt timed
//! out), within the call's deadline. Any other method (`IDEMPOTENCY_UNKNOWN`, or no
//! option) is sent at most once unless the call options say it is idempotent.
//!
//! ```ignore
//! // build.rs
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     grain_build::compile(&["proto/counter/v1/counter.proto"], &["proto"])?;
//!     Ok(())
//! }
//! // src/lib.rs
//! pub mod counter { grain::include_grains!("counter.v1"); }
//! ```
//!
//! Protos are compiled by `protox`, a pure-Rust compiler: no `protoc` is needed. The
//! generated code imports only the runtime's facade module (`::grain::codegen` by
//! default), so the runtime can change its insides without breaking it, and this crate
//! does not depend on the runtime. Wire names are method paths
//! (`fizzbuzz.v1.FizzService/SayFizz`), so reordering a `.proto` never breaks a running
//! cluster. Only unary rpcs are supported; a streaming rpc is a build error naming the
//! file, service and method.
//!
//! [grain context]: https://docs.rs/grain

mod generator;

use std::path::{Path, PathBuf};

/// Why code generation failed. Messages name the file, service and method concerned.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A `.proto` file could not be parsed or resolved.
    #[error("cannot compile protos: {0}")]
    Proto(String),
    /// A service uses something the generator does not support.
    #[error("{file}: service {service}: {problem}")]
    Unsupported {
        /// The `.proto` file.
        file: String,
        /// The fully qualified service name.
        service: String,
        /// What is not supported, and what to do instead.
        problem: String,
    },
    /// `OUT_DIR` is not set and no output directory was given.
    #[error("OUT_DIR is not set: call grain-build from build.rs, or set Builder::out_dir")]
    NoOutDir,
    /// Writing or formatting the generated code failed.
    #[error("cannot write generated code to {path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Compiles `protos` (searched in `includes`) into `$OUT_DIR/<package>.rs` with the
/// default settings. See [`Builder`].
pub fn compile(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
) -> Result<(), BuildError> {
    configure().compile(protos, includes)
}

/// A builder with default settings: runtime facade `::grain::codegen`, output in
/// `$OUT_DIR`, `cargo:rerun-if-changed` lines emitted.
pub fn configure() -> Builder {
    Builder {
        out_dir: None,
        runtime: "::grain::codegen".into(),
        emit_rerun_if_changed: true,
    }
}

/// Settings of one code generation run.
#[derive(Clone, Debug)]
pub struct Builder {
    out_dir: Option<PathBuf>,
    runtime: String,
    emit_rerun_if_changed: bool,
}

impl Builder {
    /// Writes the generated files to `dir` instead of `$OUT_DIR`.
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// The path of the runtime's facade module in generated code (default
    /// `::grain::codegen`; change it when the runtime crate is renamed).
    pub fn runtime_path(mut self, path: impl Into<String>) -> Self {
        self.runtime = path.into();
        self
    }

    /// Whether to print `cargo:rerun-if-changed` for every input file (default true).
    pub fn emit_rerun_if_changed(mut self, enable: bool) -> Self {
        self.emit_rerun_if_changed = enable;
        self
    }

    /// Generates messages (prost) and grains (this crate) for `protos`.
    pub fn compile(
        self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<(), BuildError> {
        let out_dir = match self.out_dir {
            Some(d) => d,
            None => std::env::var_os("OUT_DIR")
                .map(PathBuf::from)
                .ok_or(BuildError::NoOutDir)?,
        };
        let fds =
            protox::compile(protos, includes).map_err(|e| BuildError::Proto(format!("{e:?}")))?;
        if self.emit_rerun_if_changed {
            for p in protos {
                println!("cargo:rerun-if-changed={}", p.as_ref().display());
            }
            for i in includes {
                println!("cargo:rerun-if-changed={}", i.as_ref().display());
            }
        }
        generator::validate(&fds)?;
        let packages: Vec<String> = fds
            .file
            .iter()
            .filter(|f| !f.package().starts_with("google.protobuf"))
            .map(|f| f.package().to_string())
            .collect();
        let mut config = prost_build::Config::new();
        config
            .out_dir(&out_dir)
            .format(false)
            .prost_path(format!("{}::prost", self.runtime))
            .prost_types_path(format!("{}::prost_types", self.runtime))
            .service_generator(Box::new(generator::GrainGenerator::new(&self.runtime)));
        config
            .compile_fds(fds)
            .map_err(|e| BuildError::Proto(e.to_string()))?;
        for package in packages {
            let name = if package.is_empty() {
                "_.rs".to_string()
            } else {
                format!("{package}.rs")
            };
            format_file(&out_dir.join(name))?;
        }
        Ok(())
    }
}

const HEADER: &str = "// @generated by grain-build (messages by prost-build). DO NOT EDIT.\n\
                      // Regenerated on every build from the .proto files.\n\n";

fn format_file(path: &Path) -> Result<(), BuildError> {
    let err = |message: String| BuildError::Write {
        path: path.to_path_buf(),
        message,
    };
    let code = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let code = code.trim_start_matches("// This file is @generated by prost-build.\n");
    let mut file =
        syn::parse_file(code).map_err(|e| err(format!("generated code does not parse: {e}")))?;
    allow_lints(&mut file.items);
    let pretty = format!("{HEADER}{}", prettyplease::unparse(&file));
    std::fs::write(path, pretty).map_err(|e| err(e.to_string()))
}

/// Generated items answer to no user lints: messages without proto comments have no
/// docs, and prost's output is not clippy's business.
fn allow_lints(items: &mut [syn::Item]) {
    let attr: syn::Attribute =
        syn::parse_quote!(#[allow(missing_docs, dead_code, unreachable_pub, clippy::all)]);
    for item in items {
        let attrs = match item {
            syn::Item::Struct(i) => &mut i.attrs,
            syn::Item::Enum(i) => &mut i.attrs,
            syn::Item::Mod(i) => &mut i.attrs,
            syn::Item::Trait(i) => &mut i.attrs,
            syn::Item::Impl(i) => &mut i.attrs,
            syn::Item::Const(i) => &mut i.attrs,
            syn::Item::Fn(i) => &mut i.attrs,
            _ => continue,
        };
        attrs.push(attr.clone());
    }
}
