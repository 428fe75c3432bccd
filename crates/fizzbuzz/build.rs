//! Generates the FizzBuzz grains and clients from `proto/fizzbuzz/v1/fizzbuzz.proto`,
//! and the diagnostic probe grain from `proto/fizzbuzz/v1/probe.proto`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    grain_build::compile(
        &[
            "../../proto/fizzbuzz/v1/fizzbuzz.proto",
            "../../proto/fizzbuzz/v1/probe.proto",
        ],
        &["../../proto"],
    )?;
    Ok(())
}
