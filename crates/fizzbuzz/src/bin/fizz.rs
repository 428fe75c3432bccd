//! The `fizz` binary: see `fizzbuzz::cli::fizz_main`.

fn main() -> std::process::ExitCode {
    fizzbuzz::cli::fizz_main()
}
