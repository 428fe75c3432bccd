//! The three lines that turn `counter.proto` into a grain trait, a kind and a client.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    grain_build::compile(&["proto/counter/v1/counter.proto"], &["proto"])?;
    Ok(())
}
