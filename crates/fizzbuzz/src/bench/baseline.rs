//! The baselines: plain tonic services (`proto/bench/v1/bench.proto`) in processes of
//! their own on loopback, and the loops that measure them — unary echo, one
//! bidirectional stream with correlation ids, and the FizzBuzz job done with plain
//! unary calls.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use super::pb::Msg;
use super::pb::echo_client::EchoClient;
use super::pb::echo_server::{Echo, EchoServer};
use super::pb::plain_buzz_client::PlainBuzzClient;
use super::pb::plain_buzz_server::{PlainBuzz, PlainBuzzServer};
use super::pb::plain_fizz_client::PlainFizzClient;
use super::pb::plain_fizz_server::{PlainFizz, PlainFizzServer};
use crate::AppError;

/// Which baseline service a server process hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    /// `Echo`: unary and streaming echo.
    Echo,
    /// `PlainFizz`: "Fizz" for multiples of 3.
    Fizz,
    /// `PlainBuzz`: appends "Buzz" for multiples of 5.
    Buzz,
}

struct EchoService;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn unary(&self, request: Request<Msg>) -> Result<Response<Msg>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    type StreamStream = Streaming<Msg>;

    /// The answers are the requests, message by message, as they come.
    async fn stream(
        &self,
        request: Request<Streaming<Msg>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        Ok(Response::new(request.into_inner()))
    }
}

struct FizzService;

#[tonic::async_trait]
impl PlainFizz for FizzService {
    async fn say_fizz(&self, request: Request<Msg>) -> Result<Response<Msg>, Status> {
        let m = request.into_inner();
        let message = if m.number % 3 == 0 {
            "Fizz".into()
        } else {
            String::new()
        };
        Ok(Response::new(Msg { message, ..m }))
    }
}

struct BuzzService;

#[tonic::async_trait]
impl PlainBuzz for BuzzService {
    async fn say_buzz(&self, request: Request<Msg>) -> Result<Response<Msg>, Status> {
        let mut m = request.into_inner();
        if m.number % 5 == 0 {
            m.message.push_str("Buzz");
        }
        Ok(Response::new(m))
    }
}

/// Serves `service` on `bind` until the process is stopped; prints `listening on ADDR`
/// on stdout once it listens.
pub async fn serve(service: Service, bind: SocketAddr) -> Result<(), AppError> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| AppError::Failed(format!("--bind {bind}: cannot listen: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| AppError::Failed(format!("--bind {bind}: {e}")))?;
    {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "listening on {addr}");
        let _ = out.flush();
    }
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tonic::transport::Server::builder();
    // One service per process, served without a router, as the runtime serves its own.
    let result = match service {
        Service::Echo => {
            server
                .clone()
                .serve_with_incoming(EchoServer::new(EchoService), incoming)
                .await
        }
        Service::Fizz => {
            server
                .clone()
                .serve_with_incoming(PlainFizzServer::new(FizzService), incoming)
                .await
        }
        Service::Buzz => {
            server
                .clone()
                .serve_with_incoming(PlainBuzzServer::new(BuzzService), incoming)
                .await
        }
    };
    result.map_err(|e| AppError::Failed(format!("the {service:?} server failed: {e}")))
}

async fn channel(addr: SocketAddr) -> Result<Channel, AppError> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| AppError::Failed(format!("{addr}: {e}")))?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| AppError::Failed(format!("cannot connect to {addr}: {e}")))
}

fn failed(what: &str) -> impl Fn(Status) -> AppError + '_ {
    move |s| AppError::Failed(format!("{what}: {s}"))
}

fn msg(id: u64) -> Msg {
    Msg {
        id,
        number: id as i64,
        message: String::new(),
    }
}

/// Latency percentiles of one run, in milliseconds: the ones the client's report
/// prints for a grain call, so that the three can be drawn side by side.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// The median.
    pub p50: f64,
    /// The 90th percentile.
    pub p90: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The longest sample.
    pub max: f64,
}

impl Percentiles {
    /// The percentiles of `samples` (nearest rank; all zero without samples).
    pub fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let at = |q: f64| {
            let last = samples.len().saturating_sub(1);
            let i = ((samples.len() as f64 * q) as usize).min(last);
            samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        Percentiles {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: at(1.0),
        }
    }

    /// Each percentile's median over `runs` (a run's percentiles are not averaged with
    /// another's, only the middle one taken).
    pub fn median(runs: &[Percentiles]) -> Self {
        let mid = |f: fn(&Percentiles) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        };
        Percentiles {
            p50: mid(|p| p.p50),
            p90: mid(|p| p.p90),
            p99: mid(|p| p.p99),
            max: mid(|p| p.max),
        }
    }
}

/// Calls to warm a connection up before measuring.
const WARM_UP: u64 = 200;

/// Unary echo calls one at a time: their latency percentiles.
pub async fn unary_serial(addr: SocketAddr, calls: u64) -> Result<Percentiles, AppError> {
    let mut client = EchoClient::new(channel(addr).await?);
    let mut latencies = Vec::with_capacity(calls as usize);
    for i in 0..WARM_UP + calls {
        let start = Instant::now();
        client.unary(msg(i)).await.map_err(failed("unary echo"))?;
        if i >= WARM_UP {
            latencies.push(start.elapsed());
        }
    }
    Ok(Percentiles::of(latencies))
}

/// Unary echo calls with `inflight` at once on one channel: calls per second.
pub async fn unary_concurrent(
    addr: SocketAddr,
    calls: u64,
    inflight: usize,
) -> Result<f64, AppError> {
    let channel = channel(addr).await?;
    let mut warm = EchoClient::new(channel.clone());
    for i in 0..WARM_UP {
        warm.unary(msg(i)).await.map_err(failed("unary echo"))?;
    }
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..inflight {
        let mut client = EchoClient::new(channel.clone());
        let next = next.clone();
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= calls {
                    return Ok(());
                }
                client.unary(msg(i)).await.map_err(failed("unary echo"))?;
            }
        });
    }
    join_all(tasks).await?;
    Ok(calls as f64 / start.elapsed().as_secs_f64().max(1e-9))
}

async fn join_all(mut tasks: tokio::task::JoinSet<Result<(), AppError>>) -> Result<(), AppError> {
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| AppError::Failed(format!("a benchmark task failed: {e}")))??;
    }
    Ok(())
}

/// One bidirectional stream: what is sent, and the answers in order.
async fn open_stream(addr: SocketAddr) -> Result<(mpsc::Sender<Msg>, Streaming<Msg>), AppError> {
    let mut client = EchoClient::new(channel(addr).await?);
    let (tx, rx) = mpsc::channel(1024);
    let answers = client
        .stream(ReceiverStream::new(rx))
        .await
        .map_err(failed("echo stream"))?
        .into_inner();
    Ok((tx, answers))
}

fn stream_closed() -> AppError {
    AppError::Failed("the echo stream closed early".into())
}

/// One message at a time on one stream, each waiting for its echo: the percentiles of
/// the round trips.
pub async fn stream_serial(addr: SocketAddr, messages: u64) -> Result<Percentiles, AppError> {
    let (tx, mut answers) = open_stream(addr).await?;
    let mut latencies = Vec::with_capacity(messages as usize);
    for i in 0..WARM_UP + messages {
        let start = Instant::now();
        tx.send(msg(i)).await.map_err(|_| stream_closed())?;
        let answer = answers.message().await.map_err(failed("echo stream"))?;
        if answer.map(|m| m.id) != Some(i) {
            return Err(AppError::Failed(format!(
                "the echo of message {i} did not come back"
            )));
        }
        if i >= WARM_UP {
            latencies.push(start.elapsed());
        }
    }
    Ok(Percentiles::of(latencies))
}

/// Messages on one stream with up to `inflight` unanswered, each matched to its echo by
/// its correlation id: messages per second.
pub async fn stream_concurrent(
    addr: SocketAddr,
    messages: u64,
    inflight: usize,
) -> Result<f64, AppError> {
    let (tx, mut answers) = open_stream(addr).await?;
    let window = Arc::new(Semaphore::new(inflight));
    let pending: Arc<parking_lot::Mutex<HashMap<u64, Instant>>> = Arc::default();
    let start = Instant::now();
    let writer = {
        let (window, pending) = (window.clone(), pending.clone());
        tokio::spawn(async move {
            for i in 0..messages {
                let Ok(permit) = window.acquire().await else {
                    return;
                };
                permit.forget();
                pending.lock().insert(i, Instant::now());
                if tx.send(msg(i)).await.is_err() {
                    return;
                }
            }
        })
    };
    for _ in 0..messages {
        let answer = answers
            .message()
            .await
            .map_err(failed("echo stream"))?
            .ok_or_else(stream_closed)?;
        if pending.lock().remove(&answer.id).is_none() {
            return Err(AppError::Failed(format!(
                "an echo with unknown id {}",
                answer.id
            )));
        }
        window.add_permits(1);
    }
    let took = start.elapsed();
    writer.abort();
    Ok(messages as f64 / took.as_secs_f64().max(1e-9))
}

/// The FizzBuzz job with plain unary calls — `SayFizz(n)` to one process, then
/// `SayBuzz(n, answer)` to the other, `concurrency` numbers at once — every answer
/// checked against the canonical line: numbers per second.
pub async fn plain_fizzbuzz(
    fizz: SocketAddr,
    buzz: SocketAddr,
    count: u64,
    concurrency: usize,
) -> Result<f64, AppError> {
    let (fizz, buzz) = (channel(fizz).await?, channel(buzz).await?);
    let next = Arc::new(AtomicU64::new(1));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let mut f = PlainFizzClient::new(fizz.clone());
        let mut b = PlainBuzzClient::new(buzz.clone());
        let next = next.clone();
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n > count {
                    return Ok(());
                }
                let fizzed = f
                    .say_fizz(msg(n))
                    .await
                    .map_err(failed("SayFizz"))?
                    .into_inner();
                let answer = b
                    .say_buzz(fizzed)
                    .await
                    .map_err(failed("SayBuzz"))?
                    .into_inner();
                let line = if answer.message.is_empty() {
                    n.to_string()
                } else {
                    answer.message
                };
                if line != crate::reference_line(n as i64) {
                    return Err(AppError::Failed(format!(
                        "plain FizzBuzz answered {line:?} for {n}"
                    )));
                }
            }
        });
    }
    join_all(tasks).await?;
    Ok(count as f64 / start.elapsed().as_secs_f64().max(1e-9))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_and_their_median_is_per_percentile() {
        let samples: Vec<Duration> = (1..=1000).rev().map(Duration::from_micros).collect();
        let p = Percentiles::of(samples);
        for (got, want) in [(p.p50, 0.501), (p.p90, 0.901), (p.p99, 0.991), (p.max, 1.0)] {
            assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        }
        assert_eq!(Percentiles::of(Vec::new()), Percentiles::default());
        let run = |base: f64| Percentiles {
            p50: base,
            p90: 10.0 - base,
            p99: base,
            max: base,
        };
        let m = Percentiles::median(&[run(1.0), run(3.0), run(2.0)]);
        assert_eq!((m.p50, m.p90), (2.0, 8.0));
    }
}
