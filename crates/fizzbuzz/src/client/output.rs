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

    /// Hands the gathered lines to `out` once a chunk is full or [`FLUSH_EVERY`] has
    /// passed.
    pub(super) async fn write_if_due(&mut self, out: &Output) -> Result<Reader, AppError> {
        if self.pending.len() < CHUNK && self.last_write.elapsed() < FLUSH_EVERY {
            return Ok(Reader::Open);
        }
        self.last_write = Instant::now();
        self.write(out).await
    }

    /// Hands the gathered lines to `out`.
    pub(super) async fn write(&mut self, out: &Output) -> Result<Reader, AppError> {
        if self.pending.is_empty() {
            return Ok(out.state());
        }
        let chunk = std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK + 256));
        Ok(out.send(chunk).await)
    }
}

/// Chunks handed to the writer and not yet written: while a reader pauses (`| less`),
/// up to this many (16 MiB) wait before the client stops taking answers, so the calls
/// in flight go on meanwhile.
const QUEUED_CHUNKS: usize = 256;

/// Where the lines go: a thread of its own writes them (a write to a paused reader
/// blocks), so neither the runtime nor the client's loop waits on the reader until
/// [`QUEUED_CHUNKS`] chunks are queued.
pub(super) struct Output {
    chunks: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    writer: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Output {
    /// Starts the writer thread of `out`.
    pub(super) fn start(mut out: Box<dyn Write + Send>) -> Result<Self, AppError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(QUEUED_CHUNKS);
        let writer = std::thread::Builder::new()
            .name("client-output".into())
            .spawn(move || {
                while let Some(chunk) = rx.blocking_recv() {
                    out.write_all(&chunk)?;
                    out.flush()?;
                }
                Ok(())
            })
            .map_err(|e| AppError::Failed(format!("cannot start the output thread: {e}")))?;
        Ok(Self {
            chunks: Some(tx),
            writer: Some(writer),
        })
    }

    /// Queues `chunk`, waiting while [`QUEUED_CHUNKS`] are queued; says whether the
    /// reader is still there.
    async fn send(&self, chunk: Vec<u8>) -> Reader {
        match &self.chunks {
            Some(tx) if tx.send(chunk).await.is_ok() => Reader::Open,
            // The writer stopped: the reader went away, or a write failed (`finish`
            // says which).
            _ => Reader::Gone,
        }
    }

    /// Open while the writer runs.
    fn state(&self) -> Reader {
        match &self.writer {
            Some(w) if !w.is_finished() => Reader::Open,
            _ => Reader::Gone,
        }
    }

    /// Waits until everything queued is written; `Gone` when the reader went away.
    pub(super) async fn finish(mut self) -> Result<Reader, AppError> {
        self.chunks = None;
        let Some(writer) = self.writer.take() else {
            return Ok(Reader::Gone);
        };
        let joined = tokio::task::spawn_blocking(move || writer.join())
            .await
            .map_err(|e| AppError::Failed(format!("the output thread: {e}")))?;
        match joined {
            Ok(Ok(())) => Ok(Reader::Open),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Reader::Gone),
            Ok(Err(e)) => Err(AppError::Failed(format!("cannot write to stdout: {e}"))),
            Err(_) => Err(AppError::Failed("the output thread panicked".into())),
        }
    }
}
