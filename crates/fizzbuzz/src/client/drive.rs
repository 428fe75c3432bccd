//! Driving the run: join the cluster, wait for both kinds, then issue the numbers
//! (paced, `concurrency` in flight) and take their answers in order until done or
//! stopped.

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use grain::{CallOptions, Cluster, Node};
use tokio::time::Instant;

use super::calls::{Outcome, one_number};
use super::options::{ClientArgs, ClientCommand};
use super::output::{Lines, Output, Reader};
use super::progress::Progress;
use super::summary::Summary;
use crate::config::{NodeSetup, Role};
use crate::proto::{BuzzServiceKind, FizzServiceKind};
use crate::stats::LongestGap;
use crate::{AppError, start_error};

/// The numbers to issue, at most `--rate` a second: `1..=count`, or that again and
/// again with `--forever`.
fn paced_numbers(args: &ClientArgs) -> impl futures::Stream<Item = i64> + Send + use<> {
    let count = args.count as i64;
    let numbers: Box<dyn Iterator<Item = i64> + Send> = if args.forever {
        Box::new((1..=count).cycle())
    } else {
        Box::new(1..=count)
    };
    let ticker = args.rate.map(|r| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    futures::stream::unfold((numbers, ticker), |(mut it, mut ticker)| async move {
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        it.next().map(|n| (n, (it, ticker)))
    })
}

/// Drives FizzBuzz through `cluster` (which must see both kinds) and writes each answer
/// to `out` in order, until done or `stop` resolves.
pub async fn run_numbers(
    cluster: &Cluster,
    args: &ClientArgs,
    out: Box<dyn Write + Send>,
    stop: impl Future<Output = ()>,
) -> Result<Summary, AppError> {
    args.validate()?;
    let out = Output::start(out)?;
    let options = Arc::new(CallOptions::default().with_timeout(args.call_timeout));
    let identity: Arc<str> = Arc::from(args.identity.as_str());
    let spread = args.identities;
    let tracing = cluster.tracing().cloned();
    // Boxed as a `Send` stream: naming the type here lets the compiler prove the
    // caller's future `Send` (it cannot see through these closures on its own).
    let mut results: futures::stream::BoxStream<'_, Outcome> = paced_numbers(args)
        .map(|n| {
            let id = match spread {
                Some(k) => Arc::from(format!("grain{}", (n - 1) % i64::from(k) + 1)),
                None => identity.clone(),
            };
            // Boxed: the future of a number holds both calls' futures, and `buffered`
            // moves it several times before it first runs (callgrind counted 1,200
            // instructions of copying a number, about 4 % of the client's work).
            Box::pin(one_number(
                cluster.clone(),
                id,
                n,
                options.clone(),
                tracing.clone(),
            ))
        })
        .buffered(args.concurrency)
        .boxed();
    tokio::pin!(stop);

    let mut summary = Summary::default();
    let progress = Progress::new(args);
    let started = Instant::now();
    // The first number is sent when `results` is first polled, just below.
    let mut stall = LongestGap::new(started);
    let mut lines = Lines::new(args.format);
    loop {
        let outcome = tokio::select! {
            biased;
            _ = &mut stop => {
                summary.interrupted = true;
                break;
            }
            o = results.next() => match o {
                Some(o) => o,
                None => break,
            },
        };
        summary.issued += 1;
        if let Some(d) = outcome.fizz {
            summary.fizz.record(d);
        }
        if let Some(d) = outcome.buzz {
            summary.buzz.record(d);
        }
        match outcome.result {
            Ok(message) => {
                summary.answered += 1;
                stall.event(Instant::now());
                lines.push(outcome.number, &message)?;
                if lines.write_if_due(&out).await? == Reader::Gone {
                    // Stop quietly, and say so in the summary.
                    summary.output_closed = true;
                    break;
                }
            }
            Err(reason) => {
                summary.failed += 1;
                if summary.failed <= 10 || summary.failed % 1000 == 0 {
                    tracing::warn!(failed = summary.failed, "{reason}");
                }
                summary.first_failure.get_or_insert(reason);
            }
        }
        progress.update(summary.issued);
    }
    progress.finish();
    if !args.forever && !summary.interrupted && !summary.output_closed {
        summary.issued = args.count;
    }
    let ended = Instant::now();
    summary.elapsed = ended.duration_since(started);
    // Until the last answer; with none, the whole run was one stall.
    summary.longest_stall = if summary.answered > 0 {
        stall.longest()
    } else {
        stall.longest_until(ended)
    };
    summary.retries = cluster.retries();
    if !summary.output_closed && lines.write(&out).await? == Reader::Gone {
        summary.output_closed = true;
    }
    if out.finish().await? == Reader::Gone {
        summary.output_closed = true;
    }
    Ok(summary)
}

/// The whole `client` command: join, wait for both kinds, run, leave.
pub async fn run_client(
    command: &ClientCommand,
    setup: &NodeSetup,
    out: Box<dyn Write + Send>,
    stop: impl Future<Output = ()>,
) -> Result<Summary, AppError> {
    command.run.validate()?;
    let config = command.common.node_config(Role::Client, setup)?;
    let membership = command.common.membership(Role::Client)?;
    let consul = membership.address().to_string();
    let health = match command.common.health_bind {
        Some(bind) => Some(crate::health::bind(bind).await?),
        None => None,
    };
    let node = Node::start_on(setup.take_listener()?, config, vec![], Arc::new(membership))
        .await
        .map_err(start_error)?;
    if let Some(listener) = health {
        crate::health::serve(listener, node.readiness()).await;
    }
    let cluster = node.cluster();
    tokio::pin!(stop);
    let kinds = [FizzServiceKind::NAME, BuzzServiceKind::NAME];
    tracing::info!(member = %node.member().id, %consul, "client waiting for {} and {}", kinds[0], kinds[1]);
    let waited = tokio::select! {
        w = cluster.wait_for_kinds(&kinds, command.run.wait_timeout) => w,
        _ = &mut stop => {
            node.shutdown().await;
            return Err(AppError::Interrupted("while waiting for the fizz and buzz nodes".into()));
        }
    };
    if let Err(missing) = waited {
        node.shutdown().await;
        return Err(AppError::Failed(format!(
            "no member hosting {} joined within {:?} (cluster {}, Consul {consul})",
            missing.missing.join(" or "),
            command.run.wait_timeout,
            command.common.cluster
        )));
    }
    let summary = run_numbers(&cluster, &command.run, out, stop).await;
    node.shutdown().await;
    summary
}
