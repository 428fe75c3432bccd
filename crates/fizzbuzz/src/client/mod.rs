//! The `client` node: waits for both kinds, then drives FizzBuzz through them and prints
//! the results in order.
//!
//! - `options`: its flags (`ClientArgs`, `ClientCommand`) and their checks;
//! - `drive`: joining the cluster and the loop that issues numbers and takes answers;
//! - `calls`: one number's `SayFizz` then `SayBuzz`;
//! - `output`: the answers as text or JSON lines, written to stdout in chunks;
//! - `progress`: the progress bar on stderr;
//! - `summary`: what a run did, its closing report and its exit verdict.

mod calls;
mod drive;
mod options;
mod output;
mod progress;
mod summary;

pub use drive::{run_client, run_numbers};
pub use options::{
    ClientArgs, ClientCommand, ENV_CALL_TIMEOUT, ENV_CONCURRENCY, ENV_COUNT, ENV_FOREVER,
    ENV_FORMAT, ENV_IDENTITIES, ENV_IDENTITY, ENV_RATE, ENV_WAIT_TIMEOUT, Format,
};
pub use summary::{Summary, verdict};
