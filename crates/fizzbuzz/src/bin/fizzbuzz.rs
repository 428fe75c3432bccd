//! The `fizzbuzz` binary: see `fizzbuzz::cli::fizzbuzz_main`.

fn main() -> std::process::ExitCode {
    fizzbuzz::cli::fizzbuzz_main()
}
