//! The `client` binary: see `fizzbuzz::cli::client_main`.

fn main() -> std::process::ExitCode {
    fizzbuzz::cli::client_main()
}
