//! What the binaries share: argument parsing with exit status 64 on a bad option,
//! logging to stderr, the runtime, and the mains themselves (stop signals are in
//! `process`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use grain_telemetry::LogFormat;

use crate::client::{ClientCommand, run_client, verdict};
use crate::config::{CommonArgs, NodeSetup, Role};
use crate::launcher::{AgentArgs, UpArgs, agent, up};
use crate::nodes::{HostArgs, run_host};
use crate::process::shutdown_signal;
use crate::{AppError, exit};

/// The target of the client's closing report in JSON logs.
const REPORT_TARGET: &str = "fizzbuzz::report";

/// Parses arguments; help and version exit 0, a bad option exits 64 with clap's message
/// (which names the option).
fn parse<T: Parser>() -> Result<T, ExitCode> {
    T::try_parse().map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            ExitCode::from(exit::USAGE)
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// Logs to stderr with `filter` (e.g. `info`, `grain=debug`) in `format`, for a
/// process that exports no telemetry.
pub fn init_logging(filter: &str, format: LogFormat) -> Result<(), AppError> {
    grain_telemetry::init_logging(filter, format).map_err(|e| AppError::Usage(e.to_string()))
}

/// Says why the process stops: a log event in JSON once logging is set up (so that
/// every stderr line is an object), else a plain `error: …` line.
fn report_error(format: LogFormat, e: &AppError) {
    if format == LogFormat::Json && tracing::dispatcher::has_been_set() {
        tracing::error!(target: "fizzbuzz", exit_code = e.exit_code(), "{e}");
    } else {
        eprintln!("error: {e}");
    }
}

fn run(
    workers: Option<usize>,
    format: LogFormat,
    work: impl std::future::Future<Output = Result<u8, AppError>> + Send + 'static,
) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    // The work runs on a worker thread, next to the I/O it waits for: from the main
    // thread (`block_on`), every answer would cost a cross-thread wake-up.
    let result = runtime.block_on(async {
        tokio::spawn(work).await.unwrap_or_else(|e| {
            Err(AppError::Failed(format!(
                "the node's main task failed: {e}"
            )))
        })
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            report_error(format, &e);
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs the node of `role`: telemetry and logging are set up before the runtime starts
/// and flushed after it stops (the exporters' HTTP client is blocking).
fn run_node<F, Fut>(role: Role, common: &CommonArgs, work: F) -> ExitCode
where
    F: FnOnce(NodeSetup) -> Fut,
    Fut: std::future::Future<Output = Result<u8, AppError>> + Send + 'static,
{
    let fail = |e: AppError| {
        eprintln!("error: {e}");
        ExitCode::from(e.exit_code())
    };
    // The member port is bound first, so that the telemetry Resource names the
    // address the node serves at.
    let mut setup = match NodeSetup::new(role, common) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    // Built next, so that logs can also go out over OTLP; until logging is set up,
    // errors go to stderr as they are.
    let telemetry = match common.telemetry(role, &setup) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    // The client's closing report is a log event in JSON (`fizzbuzz::report`): shown
    // whatever the filter, as the human report is.
    let filter = match role {
        Role::Client => format!("{},{REPORT_TARGET}=info", common.log_level),
        _ => common.log_level.clone(),
    };
    if let Err(e) = telemetry.init_logging(&filter, common.log_format) {
        return fail(AppError::Usage(e.to_string()));
    }
    telemetry.log_summary();
    setup.meter = telemetry.meter("grain");
    setup.tracing = telemetry.tracer("grain").map(|tracer| {
        grain::Tracing::new(tracer, telemetry.propagator())
            .parent_based(telemetry.sampler_follows_parent())
    });
    let code = run(common.workers, common.log_format, work(setup));
    telemetry.shutdown();
    code
}

/// The `fizz` and `buzz` binaries.
#[derive(Parser, Debug)]
#[command(version, about = "A FizzBuzz cluster node hosting one grain kind")]
struct HostCli {
    #[command(flatten)]
    args: HostArgs,
}

fn host(role: Role, args: HostArgs) -> ExitCode {
    let common = args.common.clone();
    run_node(role, &common, |setup| async move {
        run_host(role, &args, &setup, shutdown_signal()).await?;
        Ok(exit::OK)
    })
}

/// `fizz`: hosts FizzService until Ctrl-C or SIGTERM.
pub fn fizz_main() -> ExitCode {
    match parse::<HostCli>() {
        Ok(cli) => host(Role::Fizz, cli.args),
        Err(code) => code,
    }
}

/// `buzz`: hosts BuzzService until Ctrl-C or SIGTERM.
pub fn buzz_main() -> ExitCode {
    match parse::<HostCli>() {
        Ok(cli) => host(Role::Buzz, cli.args),
        Err(code) => code,
    }
}

/// The `client` binary.
#[derive(Parser, Debug)]
#[command(
    version,
    about = "Drives FizzBuzz through the cluster and prints the results in order"
)]
struct ClientCli {
    #[command(flatten)]
    command: ClientCommand,
}

fn client(command: ClientCommand) -> ExitCode {
    let common = command.common.clone();
    run_node(Role::Client, &common, |setup| async move {
        // The client gathers its output into chunks, written by a thread of their own.
        let out = Box::new(std::io::stdout());
        let summary = run_client(&command, &setup, out, shutdown_signal()).await?;
        // In JSON, every stderr line is a JSON object: the report is one log event.
        match command.common.log_format {
            LogFormat::Human => eprint!("{}", summary.report()),
            LogFormat::Json => tracing::info!(target: REPORT_TARGET, "{}", summary.report()),
        }
        verdict(&command.run, &summary)?;
        Ok(exit::OK)
    })
}

/// `client`: joins, waits for both kinds, prints FizzBuzz.
pub fn client_main() -> ExitCode {
    match parse::<ClientCli>() {
        Ok(cli) => client(cli.command),
        Err(code) => code,
    }
}

/// The `fizzbuzz` launcher.
#[derive(Parser, Debug)]
#[command(
    version,
    about = "The FizzBuzz cluster: one command to run it all, or any one part"
)]
struct FizzbuzzCli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a dev agent (or use --consul-addr), the fizz, buzz and client nodes, and
    /// print the client's output; exits with the client's status.
    Up(UpArgs),
    /// Make a CA and a member certificate it signs, for --tls-cert/--tls-key/--tls-ca.
    Certs(crate::certs::CertsArgs),
    /// Run the Consul-compatible dev agent alone.
    Agent(AgentArgs),
    /// Run a fizz node (as the `fizz` binary does).
    Fizz(HostArgs),
    /// Run a buzz node (as the `buzz` binary does).
    Buzz(HostArgs),
    /// Run the client (as the `client` binary does).
    Client(ClientCommand),
    /// Ask a node's gRPC health service for its status (exit 0: SERVING), as a
    /// container health check does.
    Health(crate::health::ProbeArgs),
    /// Measure the speed figures, each against its baseline (plain tonic), and print
    /// them (build with --release).
    Bench(crate::bench::BenchArgs),
    /// A baseline service of `fizzbuzz bench` (started by it).
    #[command(hide = true)]
    BenchServer(crate::bench::ServerArgs),
}

/// `fizzbuzz up | agent | fizz | buzz | client`.
pub fn fizzbuzz_main() -> ExitCode {
    let cli = match parse::<FizzbuzzCli>() {
        Ok(c) => c,
        Err(code) => return code,
    };
    match cli.command {
        Command::Up(args) => run(None, args.log_format, async move {
            init_logging("info,grain=warn", args.log_format)?;
            up(&args, shutdown_signal()).await
        }),
        Command::Agent(args) => run(None, LogFormat::Human, async move {
            init_logging("info", LogFormat::Human)?;
            agent(&args, shutdown_signal()).await?;
            Ok(exit::OK)
        }),
        Command::Certs(args) => match crate::certs::certs(&args) {
            Ok(done) => {
                print!("{done}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(e.exit_code())
            }
        },
        Command::Fizz(args) => host(Role::Fizz, args),
        Command::Buzz(args) => host(Role::Buzz, args),
        Command::Client(command) => client(command),
        Command::Health(args) => run(Some(1), LogFormat::Human, async move {
            crate::health::probe(&args).await
        }),
        Command::Bench(args) => run(None, LogFormat::Human, async move {
            crate::bench::bench(&args).await
        }),
        // Default workers, as the nodes `fizzbuzz up` starts have.
        Command::BenchServer(args) => run(None, LogFormat::Human, async move {
            crate::bench::baseline::serve(args.service, args.bind).await?;
            Ok(exit::OK)
        }),
    }
}
