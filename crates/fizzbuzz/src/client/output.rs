//! The answers on stdout: one line per number (text or JSON), gathered into chunks and
//! written without stalling the runtime.

use std::io::Write;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::options::Format;
use crate::AppError;

/// How many bytes of output are gathered before they are written.
const CHUNK: usize = 64 << 10;

/// Gathered lines are written at least this often, so a reader (`tail -f`, a test, a
/// terminal) sees progress.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

#[derive(Serialize)]
struct JsonLine<'a> {
    number: i64,
    message: &'a str,
}

/// Whether stdout's reader is still there after a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reader {
    /// It took the lines.
    Open,
    /// It went away (`| head`): stop quietly, like other Unix filters.
    Gone,
}

/// The lines not written yet.
pub(super) struct Lines {
    format: Format,
    pending: Vec<u8>,
    last_write: Instant,
}

impl Lines {
    /// No lines yet, in `format`.
    pub(super) fn new(format: Format) -> Self {
        Self {
            format,
            pending: Vec::with_capacity(CHUNK + 256),
            last_write: Instant::now(),
        }
    }

    /// Adds the line of `number`, whose answer is `message` (empty: the number itself).
    pub(super) fn push(&mut self, number: i64, message: &str) -> Result<(), AppError> {
        let line = match self.format {
            Format::Text if message.is_empty() => writeln!(self.pending, "{number}"),
            Format::Text => writeln!(self.pending, "{message}"),
            Format::Json => {
                let line = JsonLine { number, message };
                match serde_json::to_string(&line) {
                    Ok(j) => writeln!(self.pending, "{j}"),
                    Err(e) => return Err(AppError::Failed(format!("cannot encode JSON: {e}"))),
                }
            }
        };
        line.map_err(|e| AppError::Failed(format!("cannot format a line: {e}")))
    }

    /// Writes the gathered lines once a chunk is full or [`FLUSH_EVERY`] has passed.
    pub(super) fn write_if_due(
        &mut self,
        out: &mut (dyn Write + Send),
    ) -> Result<Reader, AppError> {
        if self.pending.len() < CHUNK && self.last_write.elapsed() < FLUSH_EVERY {
            return Ok(Reader::Open);
        }
        self.last_write = Instant::now();
        self.write(out)
    }

    /// Writes and flushes the gathered lines.
    pub(super) fn write(&mut self, out: &mut (dyn Write + Send)) -> Result<Reader, AppError> {
        match write_out(out, &self.pending) {
            Ok(()) => {
                self.pending.clear();
                Ok(Reader::Open)
            }
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Reader::Gone),
            Err(e) => Err(AppError::Failed(format!("cannot write to stdout: {e}"))),
        }
    }
}

/// Writes and flushes `bytes`. On a multi-threaded runtime the (blocking) write runs
/// with `block_in_place`, so a slow or paused reader (`| less`) stalls only this task:
/// links, timers and the membership heartbeat go on, even with one worker.
fn write_out(out: &mut (dyn Write + Send), bytes: &[u8]) -> std::io::Result<()> {
    let mut write = || {
        out.write_all(bytes)?;
        out.flush()
    };
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(write),
        _ => write(),
    }
}
