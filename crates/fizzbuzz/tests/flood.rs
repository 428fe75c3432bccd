//! A peer floods a fizz node with large payloads for 60 s: the node's resident memory
//! stays flat (the median of the last 10 s is at most 10 % over that of the 10 s after
//! a 5 s warm-up, and it never doubles), it keeps answering
//! other calls meanwhile, and the flood's calls get answers or clear errors — the
//! limits in bytes (`max_inflight_bytes_per_peer` on the node, `outbound_queue_bytes`
//! on the flooding member) bound what is held however much is sent.
//!
//! Ignored by `cargo test` (it runs for a minute, and its figures mean something on
//! release binaries): `.ci/run` runs it with the fault scenarios:
//!
//! ```sh
//! cargo test --release --test flood -- --ignored --nocapture
//! ```

#[path = "faults/cluster.rs"]
#[allow(dead_code)]
mod cluster;
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use grain::{CallError, CallOptions, ClusterIdentity, Node, NodeConfig};
use grain_consul::{ConsulConfig, ConsulMembership};
use prost::bytes::Bytes;
use tokio::time::Instant;

/// How long the flood lasts.
const FLOOD: Duration = Duration::from_secs(60);
/// The resident memory of the flood's first seconds after this is the baseline (the
/// median of [`WINDOW`]), compared with the median of its last [`WINDOW`].
const WARM_UP: Duration = Duration::from_secs(5);
/// How long the baseline and the end are measured over.
const WINDOW: Duration = Duration::from_secs(10);
/// Calls in flight at once from the flooding member.
const FLOODERS: usize = 256;
/// The payload of every flooding call: 3 MiB (the default limit is 4 MiB).
const PAYLOAD_BYTES: usize = 3 << 20;
const SAY_FIZZ: &str = "fizzbuzz.v1.FizzService/SayFizz";

/// A process's resident memory, in bytes, from `/proc/<pid>/status`.
fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a 60 s flood: run by .ci/run with --release"]
async fn a_flood_of_large_payloads_leaves_the_nodes_memory_flat() {
    let dir = cluster::scenario_dir("flood");
    let (_agent, consul) = cluster::start_agent(&dir, "127.0.0.1:0", &[], 1).await;
    let mut fizz = cluster::start_node_with(&dir, "fizz", "fizz-1", &consul, &[]).await;
    cluster::wait_listed(&consul, &[&fizz.member], Duration::from_secs(20)).await;
    let pid = fizz.child.id().unwrap_or_else(|| panic!("fizz has exited"));

    // The flooding member: joins the cluster, hosting nothing.
    let membership = ConsulMembership::new(
        cluster::CLUSTER,
        ConsulConfig {
            address: consul.clone(),
            role: "flood".into(),
            ..ConsulConfig::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let config = NodeConfig {
        cluster_name: cluster::CLUSTER.into(),
        member_prefix: "flood".into(),
        ..NodeConfig::default()
    };
    let node = Node::start(config, vec![], Arc::new(membership))
        .await
        .unwrap_or_else(|e| panic!("the flooding member did not start: {e}"));
    let cluster = node.cluster();
    let kinds = cluster
        .wait_for_kinds(&["FizzService"], Duration::from_secs(20))
        .await;
    assert!(kinds.is_ok(), "no FizzService member seen: {kinds:?}");

    // One shared buffer: the flood's own memory is not what is measured.
    let payload = Bytes::from(vec![0xA5u8; PAYLOAD_BYTES]);
    let answered = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let timed_out = Arc::new(AtomicU64::new(0));
    let other = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let started = Instant::now();
    let end = started + FLOOD;
    let mut flooders = Vec::new();
    for i in 0..FLOODERS {
        let cluster = cluster.clone();
        let payload = payload.clone();
        let (answered, refused, timed_out, other) = (
            answered.clone(),
            refused.clone(),
            timed_out.clone(),
            other.clone(),
        );
        flooders.push(tokio::spawn(async move {
            // A few identities, so that calls queue in their mailboxes too.
            let id = ClusterIdentity::new("FizzService", format!("flood{}", i % 4));
            let options = CallOptions::default().with_timeout(Duration::from_secs(10));
            while Instant::now() < end {
                match cluster
                    .call_with(&id, SAY_FIZZ, payload.clone(), &options)
                    .await
                {
                    // A payload of 0xA5 bytes is no FizzRequest: the grain says so.
                    Err(CallError::Application { .. }) | Ok(_) => {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(CallError::Timeout { .. }) => {
                        timed_out.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut o) = other.lock()
                            && o.len() < 5
                        {
                            o.push(e.to_string());
                        }
                    }
                }
            }
        }));
    }

    // Meanwhile: small calls of another identity, one after another, each within its
    // deadline; and the node's memory, every 250 ms.
    let bystander = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let small = ClusterIdentity::new("FizzService", "bystander");
            let options = CallOptions::default().with_timeout(Duration::from_secs(10));
            let request = fizzbuzz::proto::FizzRequest {
                number: 3,
                message: String::new(),
            };
            let payload = Bytes::from(prost::Message::encode_to_vec(&request));
            let (mut ok, mut failed) = (0u32, Vec::new());
            while Instant::now() < end {
                match cluster
                    .call_with(&small, SAY_FIZZ, payload.clone(), &options)
                    .await
                {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (ok, failed)
        })
    };
    let mut samples: Vec<(Duration, u64)> = Vec::new();
    while Instant::now() < end {
        assert!(
            fizz.running(),
            "fizz exited during the flood: {}",
            fizz.log_text()
        );
        if let Some(bytes) = rss(pid) {
            samples.push((started.elapsed(), bytes));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
    let median = |from: Duration, to: Duration| {
        let mut v: Vec<u64> = samples
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, b)| *b)
            .collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    let by_window: Vec<String> = (0..FLOOD.as_secs() / WINDOW.as_secs())
        .map(|i| {
            let from = WINDOW * i as u32;
            format!("{:.1}", mib(median(from, from + WINDOW)))
        })
        .collect();
    println!(
        "flood: fizz resident memory, median of each {WINDOW:?} (MiB): {}",
        by_window.join(" ")
    );
    let baseline = median(WARM_UP, WARM_UP + WINDOW);
    let last = median(FLOOD - WINDOW, FLOOD + WINDOW);
    let peak = samples.iter().map(|(_, b)| *b).max().unwrap_or(0);
    let (small_ok, small_failed) = tokio::time::timeout(Duration::from_secs(30), bystander)
        .await
        .unwrap_or_else(|_| panic!("the bystander's last call did not end"))
        .unwrap_or_else(|e| panic!("{e}"));
    for f in flooders {
        let _ = tokio::time::timeout(Duration::from_secs(30), f).await;
    }
    let answered = answered.load(Ordering::Relaxed);
    let sent_gib = (answered * PAYLOAD_BYTES as u64) as f64 / f64::from(1u32 << 30);
    println!(
        "flood: {answered} calls of {} MiB answered ({sent_gib:.1} GiB) in {:?}, {} timed out, \
         {} otherwise failed {:?}; fizz resident memory (median): {:.1} MiB from {WARM_UP:?} \
         to {:?}, {:.1} MiB in the last {WINDOW:?} ({:+.1} %), peak {:.1} MiB, {} samples; \
         small calls meanwhile: {small_ok} answered, {} failed {:?}",
        PAYLOAD_BYTES >> 20,
        started.elapsed(),
        timed_out.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        other.lock().map(|o| o.clone()).unwrap_or_default(),
        mib(baseline),
        WARM_UP + WINDOW,
        mib(last),
        (last as f64 / baseline.max(1) as f64 - 1.0) * 100.0,
        mib(peak),
        samples.len(),
        small_failed.len(),
        small_failed,
    );
    assert!(
        sent_gib >= 4.0,
        "the flood pushed only {sent_gib:.1} GiB: not a flood"
    );
    assert!(
        baseline > 0 && last > 0 && samples.len() >= 100,
        "memory was not read"
    );
    assert!(
        last as f64 <= baseline as f64 * 1.10,
        "fizz grew from {:.1} MiB to {:.1} MiB during the flood",
        mib(baseline),
        mib(last)
    );
    assert!(
        peak as f64 <= baseline as f64 * 2.0,
        "fizz peaked at {:.1} MiB, over twice its {:.1} MiB",
        mib(peak),
        mib(baseline)
    );
    assert!(
        small_failed.is_empty() && small_ok >= 20,
        "calls beside the flood failed: {small_failed:?} ({small_ok} answered)"
    );
    node.shutdown().await;
    common::terminate(fizz.child, "fizz").await;
    let _ = std::fs::remove_dir_all(&dir);
}
