//! The service model → Rust source: one trait, one kind registration and one client per
//! service. Messages are prost's; this module only writes the grain parts.

use std::fmt::Write as _;

use prost_build::{Method, Service, ServiceGenerator};
use prost_types::FileDescriptorSet;

use crate::BuildError;

/// Names the generated client uses for itself; an rpc may not take them.
const CLIENT_RESERVED: &[&str] = &["new", "with_options", "identity", "cluster", "options"];

/// Rejects what the generator does not support, naming file, service and method.
pub(crate) fn validate(fds: &FileDescriptorSet) -> Result<(), BuildError> {
    for file in &fds.file {
        for service in &file.service {
            let full = if file.package().is_empty() {
                service.name().to_string()
            } else {
                format!("{}.{}", file.package(), service.name())
            };
            let unsupported = |problem: String| BuildError::Unsupported {
                file: file.name().to_string(),
                service: full.clone(),
                problem,
            };
            for m in &service.method {
                let streaming = match (m.client_streaming(), m.server_streaming()) {
                    (false, false) => None,
                    (true, false) => Some("client-streaming"),
                    (false, true) => Some("server-streaming"),
                    (true, true) => Some("bidirectional-streaming"),
                };
                if let Some(kind) = streaming {
                    return Err(unsupported(format!(
                        "rpc {} is {kind}; grain methods must be unary (one request, one response)",
                        m.name()
                    )));
                }
                let snake = snake_case(m.name());
                if CLIENT_RESERVED.contains(&snake.as_str()) {
                    return Err(unsupported(format!(
                        "rpc {} would generate client method `{snake}`, which the generated client \
                         already uses; rename the rpc",
                        m.name()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// `SayFizz` → `say_fizz` (for reserved-name checks only; prost names the methods).
fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `SayFizz` → `SAY_FIZZ`.
fn shouty(name: &str) -> String {
    snake_case(name).to_ascii_uppercase()
}

/// A Rust method name, without a raw-identifier prefix, with `suffix` appended.
fn suffixed(name: &str, suffix: &str) -> String {
    format!("{}{suffix}", name.trim_start_matches("r#"))
}

fn docs(out: &mut String, indent: &str, lines: &[String]) {
    for l in lines {
        let l = l.trim_end();
        let l = l.strip_prefix(' ').unwrap_or(l);
        let _ = writeln!(out, "{indent}///{}{l}", if l.is_empty() { "" } else { " " });
    }
}

/// The prost service generator that writes grain code.
pub(crate) struct GrainGenerator {
    rt: String,
}

impl GrainGenerator {
    pub(crate) fn new(runtime: &str) -> Self {
        Self {
            rt: runtime.to_string(),
        }
    }
}

/// Whether the `.proto` declares `m` safe to run more than once: `idempotency_level`
/// `NO_SIDE_EFFECTS` or `IDEMPOTENT` (absent or `IDEMPOTENCY_UNKNOWN` is not).
fn idempotent(m: &Method) -> bool {
    use prost_types::method_options::IdempotencyLevel;
    matches!(
        m.options.idempotency_level(),
        IdempotencyLevel::NoSideEffects | IdempotencyLevel::Idempotent
    )
}

/// The doc of `<METHOD>_IDEMPOTENT`: what the `.proto` says and what follows from it.
fn idempotency_doc(m: &Method) -> String {
    let level = m.options.idempotency_level().as_str_name();
    let declared = if m.options.idempotency_level.is_some() {
        format!("declares `idempotency_level = {level}`")
    } else {
        "declares no `idempotency_level`".to_string()
    };
    let follows = if idempotent(m) {
        "idempotent: the typed client also retries it after an attempt that may have run"
    } else {
        "not idempotent: the typed client sends it at most once"
    };
    format!("Rpc `{}` {declared};\n/// {follows}.", m.proto_name)
}

fn method_path(service: &Service, m: &Method) -> String {
    if service.package.is_empty() {
        format!("{}/{}", service.proto_name, m.proto_name)
    } else {
        format!(
            "{}.{}/{}",
            service.package, service.proto_name, m.proto_name
        )
    }
}

impl ServiceGenerator for GrainGenerator {
    fn generate(&mut self, service: Service, buf: &mut String) {
        let rt = &self.rt;
        let s = &service.name;
        let full = if service.package.is_empty() {
            service.proto_name.clone()
        } else {
            format!("{}.{}", service.package, service.proto_name)
        };
        let mut o = String::new();

        // The trait the grain implements.
        docs(&mut o, "", &service.comments.leading);
        if !service.comments.leading.is_empty() {
            o.push_str("///\n");
        }
        let _ = writeln!(
            o,
            "/// The grain side of service `{full}`: implement it, then register it with [`{s}Kind::new`].\n\
             /// One value is one activation: it handles one call at a time and keeps its fields between calls."
        );
        let _ = writeln!(o, "pub trait {s}: ::core::marker::Send + 'static {{");
        let _ = writeln!(
            o,
            "/// Runs once before the first call of an activation; an error fails that call.\n\
             fn activated(&mut self, ctx: &{rt}::GrainContext) -> impl ::core::future::Future<Output = ::core::result::Result<(), {rt}::GrainError>> + ::core::marker::Send {{\n\
             let _ = ctx;\n\
             async {{ ::core::result::Result::Ok(()) }}\n\
             }}\n\
             /// Runs once when the activation is passivated or its node shuts down.\n\
             fn deactivated(&mut self, ctx: &{rt}::GrainContext) -> impl ::core::future::Future<Output = ()> + ::core::marker::Send {{\n\
             let _ = ctx;\n\
             async {{}}\n\
             }}"
        );
        for m in &service.methods {
            docs(&mut o, "", &m.comments.leading);
            if !m.comments.leading.is_empty() {
                o.push_str("///\n");
            }
            let _ = writeln!(o, "/// Handles `{}`.", method_path(&service, m));
            if idempotent(m) {
                o.push_str(
                    "///\n/// Declared idempotent in the `.proto`: one call may run it more than once.\n",
                );
            }
            let _ = writeln!(
                o,
                "fn {name}(&mut self, ctx: &{rt}::GrainContext, request: {input}) -> impl ::core::future::Future<Output = ::core::result::Result<{output}, {rt}::GrainError>> + ::core::marker::Send;",
                name = m.name,
                input = m.input_type,
                output = m.output_type,
            );
        }
        o.push_str("}\n");

        // The kind registration.
        let _ = writeln!(
            o,
            "/// Registers a [`{s}`] implementation as the grain kind `{kind}` on a node.\n\
             #[derive(Clone, Copy, Debug)]\n\
             pub struct {s}Kind;\n\
             impl {s}Kind {{\n\
             /// The kind name: the service name.\n\
             pub const NAME: &'static str = \"{kind}\";",
            kind = service.proto_name,
        );
        for m in &service.methods {
            let _ = writeln!(
                o,
                "/// The wire name of rpc `{proto}`.\n\
                 pub const {upper}_PATH: &'static str = \"{path}\";\n\
                 /// {says}\n\
                 pub const {upper}_IDEMPOTENT: bool = {idempotent};",
                proto = m.proto_name,
                upper = shouty(&m.proto_name),
                path = method_path(&service, m),
                says = idempotency_doc(m),
                idempotent = idempotent(m),
            );
        }
        let _ = writeln!(
            o,
            "/// A kind whose activations `factory` makes, one per identity. Set options such as\n\
             /// the idle timeout on the returned kind.\n\
             pub fn new<G, F>(factory: F) -> {rt}::Kind\n\
             where\n\
             G: {s},\n\
             F: ::core::ops::Fn(&{rt}::ClusterIdentity) -> G + ::core::marker::Send + ::core::marker::Sync + 'static,\n\
             {{\n\
             {rt}::Kind::new(Self::NAME, move |id: &{rt}::ClusterIdentity| {s}Grain(factory(id)))\n\
             }}\n\
             }}"
        );

        // The adapter from the typed trait to the runtime's untyped grain.
        let _ = writeln!(
            o,
            "#[doc(hidden)]\n\
             pub struct {s}Grain<G>(G);\n\
             #[{rt}::async_trait]\n\
             impl<G: {s}> {rt}::Grain for {s}Grain<G> {{\n\
             async fn activated(&mut self, ctx: &{rt}::GrainContext) -> ::core::result::Result<(), {rt}::GrainError> {{\n\
             {s}::activated(&mut self.0, ctx).await\n\
             }}\n\
             async fn handle(&mut self, ctx: &{rt}::GrainContext, method: &str, payload: {rt}::Bytes) -> ::core::result::Result<{rt}::Bytes, {rt}::GrainError> {{\n\
             match method {{"
        );
        for m in &service.methods {
            let _ = writeln!(
                o,
                "{s}Kind::{upper}_PATH => {{\n\
                 let request = {rt}::decode::<{input}>(method, payload)?;\n\
                 let response = {s}::{name}(&mut self.0, ctx, request).await?;\n\
                 ::core::result::Result::Ok({rt}::encode(&response))\n\
                 }}",
                upper = shouty(&m.proto_name),
                input = m.input_type,
                name = m.name,
            );
        }
        let _ = writeln!(
            o,
            "_ => ::core::result::Result::Err({rt}::GrainError::unimplemented(method)),\n\
             }}\n\
             }}\n\
             async fn deactivated(&mut self, ctx: &{rt}::GrainContext) {{\n\
             {s}::deactivated(&mut self.0, ctx).await\n\
             }}\n\
             }}"
        );

        // The typed client.
        let _ = writeln!(
            o,
            "/// A typed client for one grain of kind `{kind}`: `{s}Client::new(&cluster, \"grain1\")`.\n\
             /// Calls use the cluster's default options unless [`{s}Client::with_options`] says otherwise.\n\
             #[derive(Clone, Debug)]\n\
             pub struct {s}Client {{\n\
             cluster: {rt}::Cluster,\n\
             identity: {rt}::ClusterIdentity,\n\
             options: ::core::option::Option<{rt}::CallOptions>,\n\
             }}\n\
             impl {s}Client {{\n\
             /// A client for the grain `identity` of kind `{kind}`, called through `cluster`.\n\
             pub fn new(cluster: &{rt}::Cluster, identity: impl ::core::convert::Into<::std::sync::Arc<str>>) -> Self {{\n\
             Self {{ cluster: cluster.clone(), identity: {rt}::ClusterIdentity::new({s}Kind::NAME, identity), options: ::core::option::Option::None }}\n\
             }}\n\
             /// This client with its own call options (the cluster's defaults stay as they are).\n\
             pub fn with_options(mut self, options: {rt}::CallOptions) -> Self {{\n\
             self.options = ::core::option::Option::Some(options);\n\
             self\n\
             }}\n\
             /// The grain this client calls.\n\
             pub fn identity(&self) -> &{rt}::ClusterIdentity {{\n\
             &self.identity\n\
             }}",
            kind = service.proto_name,
        );
        for m in &service.methods {
            docs(&mut o, "", &m.comments.leading);
            if !m.comments.leading.is_empty() {
                o.push_str("///\n");
            }
            let delivery = if idempotent(m) {
                "Idempotent (the `.proto` says `idempotency_level`): retried after an attempt that\n\
                 /// may have run, within the deadline."
                    .to_string()
            } else {
                format!(
                    "At most once: not retried after an attempt that may have run, unless the call\n\
                     /// options say [`idempotent`]({rt}::CallOptions::idempotent)."
                )
            };
            let _ = writeln!(
                o,
                "/// Calls `{path}`.\n\
                 ///\n\
                 /// {delivery}\n\
                 pub async fn {name}(&self, request: {input}) -> ::core::result::Result<{output}, {rt}::CallError> {{\n\
                 {rt}::unary(&self.cluster, &self.identity, {s}Kind::{upper}_PATH, &request, self.options.as_ref(), {s}Kind::{upper}_IDEMPOTENT).await\n\
                 }}\n\
                 /// Calls `{path}` with explicit options for this call only.\n\
                 ///\n\
                 /// {delivery}\n\
                 pub async fn {with}(&self, request: {input}, options: &{rt}::CallOptions) -> ::core::result::Result<{output}, {rt}::CallError> {{\n\
                 {rt}::unary(&self.cluster, &self.identity, {s}Kind::{upper}_PATH, &request, ::core::option::Option::Some(options), {s}Kind::{upper}_IDEMPOTENT).await\n\
                 }}",
                path = method_path(&service, m),
                name = m.name,
                with = suffixed(&m.name, "_with"),
                input = m.input_type,
                output = m.output_type,
                upper = shouty(&m.proto_name),
            );
        }
        o.push_str("}\n");
        buf.push_str(&o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_convert_from_proto_style() {
        assert_eq!(snake_case("SayFizz"), "say_fizz");
        assert_eq!(shouty("SayFizz"), "SAY_FIZZ");
        assert_eq!(suffixed("r#type", "_with"), "type_with");
        assert_eq!(suffixed("say_fizz", "_with"), "say_fizz_with");
    }
}
