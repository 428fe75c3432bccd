//! The `buzz` binary: see `fizzbuzz::cli::buzz_main`.

fn main() -> std::process::ExitCode {
    fizzbuzz::cli::buzz_main()
}
