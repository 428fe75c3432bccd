//! Generates the FizzBuzz grains and clients from `proto/fizzbuzz/v1/fizzbuzz.proto`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    grain_build::compile(
        &["../../proto/fizzbuzz/v1/fizzbuzz.proto"],
        &["../../proto"],
    )?;
    Ok(())
}
