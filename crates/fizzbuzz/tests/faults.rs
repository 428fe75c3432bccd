//! The fault scenarios of issue 10, on the real binaries: a dev agent, 2 fizz and 2 buzz
//! nodes (with `--probe`), a client over 200,000 numbers and 64 identities, and a fault
//! injected once a fifth of the numbers are answered. Each asserts the canonical output,
//! the client's exit 0, and its own figure, and prints every figure (also on failure).
//!
//! Ignored by `cargo test`: the bounds are timings, so `.ci/run` runs them in a step of
//! their own, on release binaries, one at a time:
//!
//! ```sh
//! cargo test --release --test faults -- --ignored --test-threads 1 --nocapture
//! ```
//!
//! Everything is on loopback with ephemeral ports — except the network cut (e), whose
//! fizz runs in a network namespace joined by a veth pair on 10.77.0.1/10.77.0.2 made
//! for it (root only; elsewhere it prints SKIPPED) — each scenario is bounded in time
//! ([`SCENARIO_LIMIT`]) and traffic (`--rate`); every process is killed if it fails.
//! Each scenario leaves `probe.tsv` (who answered each identity, when) with its logs in
//! its directory when it fails.

#[path = "faults/cluster.rs"]
mod cluster;
mod common;
#[path = "faults/netns.rs"]
mod netns;
#[path = "faults/probe.rs"]
mod probe;
#[path = "faults/report.rs"]
mod report;

use std::path::PathBuf;
use std::time::Duration;

use cluster::{GrowthWatch, Proc};
use grain_consul::ConsulConfig;
use netns::Netns;
use nix::sys::signal::Signal;
use probe::Prober;
use report::{Checks, ClientSummary, first_difference};
use tokio::time::Instant;

/// Numbers per run.
const COUNT: u64 = 200_000;
/// Identities the numbers (and the probe) are spread over.
const IDENTITIES: usize = 64;
/// The client's pace: 200,000 numbers take 50 s, so every fault (the longest is a 30 s
/// Consul outage) happens, and heals, mid-run.
const RATE: &str = "4000";
/// The fault is injected once this many numbers were answered (a fifth).
const FAULT_AT: u64 = COUNT / 5;
/// A whole scenario, start to end.
const SCENARIO_LIMIT: Duration = Duration::from_secs(240);
/// How long a membership change takes to reach every member: one keep-alive interval
/// (a member's state reaches Consul) plus a second for the blocking queries to answer.
fn membership_round() -> Duration {
    ConsulConfig::default().keep_alive_interval + Duration::from_secs(1)
}
/// The nodes' TTL check (they use the provider's default).
fn ttl() -> Duration {
    ConsulConfig::default().ttl
}

/// One scenario's processes.
struct Scenario {
    dir: PathBuf,
    consul: String,
    agent: Proc,
    agents_started: usize,
    nodes: Vec<Proc>,
    prober: Option<Prober>,
    checks: Checks,
}

impl Scenario {
    /// The dev agent, 2 fizz and 2 buzz (with `--probe`), listed passing in Consul, and
    /// the probe loop.
    async fn start(name: &'static str) -> Self {
        Self::start_in(name, None).await
    }

    /// As [`Scenario::start`]; with `netns`, fizz-1 runs inside it and the agent listens
    /// on the host's end of its veth pair, so every node (and fizz-1) reaches it.
    async fn start_in(name: &'static str, netns: Option<&Netns>) -> Self {
        let checks = Checks::new(name);
        let dir = cluster::scenario_dir(name);
        checks.figure(&format!(
            "files in {}; consul TTL {:?} (the nodes' default), membership round {:?}",
            dir.display(),
            ttl(),
            membership_round()
        ));
        let (agent, consul) = match netns {
            None => cluster::start_agent(&dir, "127.0.0.1:0", &[], 1).await,
            Some(_) => {
                let bind = format!("{}:0", netns::HOST_ADDR);
                cluster::start_agent(&dir, &bind, &["--allow-non-loopback"], 1).await
            }
        };
        let mut nodes = Vec::new();
        let inside_bind = format!("{}:0", netns::INSIDE_ADDR);
        for (role, name) in [
            ("fizz", "fizz-1"),
            ("fizz", "fizz-2"),
            ("buzz", "buzz-1"),
            ("buzz", "buzz-2"),
        ] {
            let node = match netns {
                Some(ns) if name == "fizz-1" => {
                    let args = ["--probe", "--bind", inside_bind.as_str()];
                    cluster::start_node_in(&dir, role, name, &consul, &args, Some(&ns.name)).await
                }
                _ => cluster::start_node(&dir, role, name, &consul).await,
            };
            nodes.push(node);
        }
        let ids: Vec<&str> = nodes.iter().map(|n| n.member.as_str()).collect();
        cluster::wait_listed(&consul, &ids, Duration::from_secs(20)).await;
        let prober = Prober::start(&consul, IDENTITIES, nodes.len()).await;
        Self {
            dir,
            consul,
            agent,
            agents_started: 1,
            nodes,
            prober: Some(prober),
            checks,
        }
    }

    /// Starts the client over [`COUNT`] numbers and waits until [`FAULT_AT`] are answered.
    async fn start_client(&self) -> (Proc, PathBuf, GrowthWatch) {
        let count = COUNT.to_string();
        let identities = IDENTITIES.to_string();
        let (mut client, out) = cluster::start_client(
            &self.dir,
            &self.consul,
            &[
                "--count",
                &count,
                "--identities",
                &identities,
                "--rate",
                RATE,
            ],
        );
        let growth = GrowthWatch::start(out.clone());
        cluster::wait_output(&mut client, &out, FAULT_AT, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("before the fault: {e}; its log:\n{}", client.log_text()));
        (client, out, growth)
    }

    fn node(&self, name: &str) -> &Proc {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Waits for the client to finish, then checks and prints what every scenario
    /// asserts: canonical output, exit 0; returns the client's summary.
    async fn finish_client(
        &mut self,
        mut client: Proc,
        out: PathBuf,
        growth: GrowthWatch,
    ) -> ClientSummary {
        let status = client.wait(Duration::from_secs(150)).await;
        let gap = growth.longest();
        drop(growth);
        let stderr = client.log_text();
        let summary = ClientSummary::parse(&stderr);
        self.checks.figure(&summary.describe());
        self.checks.figure(&format!(
            "output: longest time without growth (measured by the test) {:.3} s",
            gap.as_secs_f64()
        ));
        self.checks.check(status.success(), || {
            format!(
                "the client exited with {status}: {}",
                summary.error.as_deref().unwrap_or("(no error line)")
            )
        });
        let text = cluster::read(&out);
        let diff = first_difference(&text, COUNT);
        self.checks.figure(&format!(
            "output: {}",
            diff.as_deref()
                .unwrap_or("exactly the canonical FizzBuzz for 1..=200000")
        ));
        self.checks.check(diff.is_none(), || {
            format!(
                "the output is not canonical: {}",
                diff.clone().unwrap_or_default()
            )
        });
        summary
    }

    /// Checks the client's `longest stall` against `bound` (failing if the line is
    /// absent).
    fn check_stall(&mut self, summary: &ClientSummary, bound: Duration) {
        match summary.longest_stall {
            None => self.checks.check(false, || {
                "the client's summary has no `longest stall: <seconds> s` line (the client does not report it yet)"
                    .into()
            }),
            Some(stall) => self.checks.check(stall <= bound, || {
                format!(
                    "longest stall {:.3} s is over the bound {:.3} s",
                    stall.as_secs_f64(),
                    bound.as_secs_f64()
                )
            }),
        }
    }

    /// Stops the probe loop (keeping it at least `observe` past `heal`, so settling is
    /// seen), checks that no stale activation answered, prints its figures.
    async fn finish_probe(
        &mut self,
        fault: Instant,
        heal: Option<Instant>,
        observe: Duration,
    ) -> probe::Record {
        if let Some(heal) = heal {
            // An observation window, not a synchronisation: the probe must run on for a
            // while after the heal to show what it settled on.
            tokio::time::sleep_until(heal + observe).await;
        }
        let record = match self.prober.take() {
            Some(p) => p.stop().await,
            None => probe::Record::default(),
        };
        record.write_tsv(&self.dir.join("probe.tsv"), fault);
        let (calls, failed) = record.calls();
        self.checks.figure(&format!(
            "probe: {calls} calls, {failed} failed{}; {} activations answered; calls that ran but whose answer never came (count gaps): {:?}; {} changes of the probe's topology seen",
            record
                .first_failure()
                .map_or(String::new(), |f| format!(" (first: {f})")),
            record.activations(),
            record.unseen_runs(),
            record.topology.len().saturating_sub(1),
        ));
        let stale = record.stale();
        self.checks.figure(&format!(
            "probe: {} stale answers (an activation answering after another had){}",
            stale.len(),
            stale.first().map_or(String::new(), |s| format!(
                "; first: {} by {} after {}, {:.3} s after the fault",
                s.identity,
                s.activation,
                s.other,
                s.at.saturating_duration_since(fault).as_secs_f64()
            ))
        ));
        self.checks.check(stale.is_empty(), || {
            let s = &stale[0];
            format!(
                "{} stale answers: {} was answered by {} after {} had answered it",
                stale.len(),
                s.identity,
                s.activation,
                s.other
            )
        });
        record
    }

    /// Counts "member joined"/"member left" lines logged by the nodes and the client
    /// after byte offsets taken at the fault, except lines naming `except` (members whose
    /// departure is not the fault's doing).
    fn topology_logs_since(
        &self,
        offsets: &[(String, usize)],
        except: &[&str],
    ) -> Vec<(String, usize)> {
        offsets
            .iter()
            .map(|(path, from)| {
                let text = cluster::read(std::path::Path::new(path));
                let n = cluster::count_after(&text, *from, "member joined", except)
                    + cluster::count_after(&text, *from, "member left", except);
                (path.clone(), n)
            })
            .collect()
    }

    fn done(self) {
        let Scenario {
            dir,
            checks,
            agent,
            nodes,
            ..
        } = self;
        drop(agent);
        drop(nodes);
        if checks.passed() {
            let _ = std::fs::remove_dir_all(&dir);
        } else {
            checks.figure(&format!("logs kept in {}", dir.display()));
        }
        checks.finish();
    }
}

/// The client's member id, from its "client waiting for …" log line.
fn client_member(log: &str) -> String {
    log.lines()
        .find(|l| l.contains("client waiting for"))
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("member=")))
        .map_or(String::from("client-?"), |w| {
            w.trim_start_matches("member=").to_string()
        })
}

/// Runs `body` within [`SCENARIO_LIMIT`]; on timeout every process is killed (dropped).
async fn bounded(name: &str, body: impl std::future::Future<Output = ()>) {
    if tokio::time::timeout(SCENARIO_LIMIT, body).await.is_err() {
        panic!("scenario {name} did not finish within {SCENARIO_LIMIT:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault scenario: run by .ci/run with --release, one at a time"]
async fn a_kill_9_of_one_fizz_stalls_the_run_at_most_1_s() {
    bounded("a", async {
        let mut s = Scenario::start("a-kill-fizz").await;
        let (client, out, growth) = s.start_client().await;
        let victim = s.node("fizz-1").member.clone();
        let fault = Instant::now();
        s.nodes[0].signal(Signal::SIGKILL);
        s.checks
            .figure(&format!("fault: kill -9 {victim} after {FAULT_AT} numbers"));
        let summary = s.finish_client(client, out, growth).await;
        s.check_stall(&summary, Duration::from_secs(1));
        let record = s.finish_probe(fault, None, Duration::ZERO).await;
        let (n, moved) = record.moved_away(&victim, fault);
        s.checks.figure(&format!(
            "probe: the {n} identities {victim} served were answered elsewhere {}",
            moved.map_or("never (some did not move)".into(), |d| format!(
                "within {:.3} s of the kill",
                d.as_secs_f64()
            ))
        ));
        s.done();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault scenario: run by .ci/run with --release, one at a time"]
async fn an_8_s_freeze_of_one_buzz_stalls_the_run_at_most_ttl_plus_1_s_and_leaves_no_stale_activation()
 {
    bounded("b", async {
        let mut s = Scenario::start("b-freeze-buzz").await;
        let (client, out, growth) = s.start_client().await;
        let victim = s.node("buzz-1").member.clone();
        let fault = Instant::now();
        s.nodes[2].signal(Signal::SIGSTOP);
        // The fault's own duration.
        tokio::time::sleep(Duration::from_secs(8)).await;
        s.nodes[2].signal(Signal::SIGCONT);
        let heal = Instant::now();
        s.checks.figure(&format!(
            "fault: SIGSTOP {victim} after {FAULT_AT} numbers, SIGCONT 8 s later"
        ));
        let summary = s.finish_client(client, out, growth).await;
        s.check_stall(&summary, ttl() + Duration::from_secs(1));
        let round = membership_round();
        let record = s.finish_probe(fault, Some(heal), round * 3).await;
        let (n, moved) = record.moved_away(&victim, fault);
        s.checks.figure(&format!(
            "probe: the {n} identities {victim} served were answered elsewhere {}",
            moved.map_or("never during the freeze".into(), |d| format!(
                "within {:.3} s of SIGSTOP",
                d.as_secs_f64()
            ))
        ));
        let unseen = record.unseen_runs().get(&victim).copied().unwrap_or(0);
        s.checks.figure(&format!(
            "probe: {unseen} probe calls ran on {victim} whose answer never came (it ran them after SIGCONT, or late)"
        ));
        s.checks.check(unseen == 0, || {
            format!("after SIGCONT, {victim} ran {unseen} calls for identities that had moved (their callers had given up)")
        });
        let (settled, silent) = record.settled_after(heal);
        let failed_late = record.failures_between(Some(heal + round), None);
        s.checks.figure(&format!(
            "probe: every identity settled on one answering activation {:.3} s after SIGCONT; {} failed calls after that plus a round",
            settled.as_secs_f64(),
            failed_late
        ));
        s.checks
            .check(silent.is_empty(), || format!("identities never answered: {silent:?}"));
        s.checks.check(settled <= round, || {
            format!(
                "identities settled {:.3} s after SIGCONT, over one membership round ({:.3} s)",
                settled.as_secs_f64(),
                round.as_secs_f64()
            )
        });
        s.done();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault scenario: run by .ci/run with --release, one at a time"]
async fn restarting_every_node_in_turn_with_sigterm_needs_no_maybe_ran_retry() {
    bounded("c", async {
        let mut s = Scenario::start("c-rolling-restart").await;
        let (mut client, out, growth) = s.start_client().await;
        let fault = Instant::now();
        for i in 0..s.nodes.len() {
            let name = s.nodes[i].name.clone();
            let role = name.split('-').next().unwrap_or_default().to_string();
            let old = s.nodes[i].member.clone();
            s.nodes[i].signal(Signal::SIGTERM);
            let status = s.nodes[i].wait(Duration::from_secs(30)).await;
            s.checks
                .check(status.success(), || format!("{name} ({old}) exited with {status} after SIGTERM"));
            let new_name = format!("{name}-r");
            let replacement = cluster::start_node(&s.dir, &role, &new_name, &s.consul).await;
            cluster::wait_listed(&s.consul, &[&replacement.member], Duration::from_secs(20)).await;
            // The next node stops only once the cluster has seen this one: the probe, a
            // member like the client, lists the replacement and no longer the old one.
            let seen = match s.prober.as_ref() {
                Some(p) => {
                    p.wait_members(&[&replacement.member], &[&old], Duration::from_secs(20))
                        .await
                }
                None => false,
            };
            s.checks.check(seen, || {
                format!("the probe did not see {} replace {old} within 20 s", replacement.member)
            });
            s.checks.figure(&format!(
                "fault: {old} stopped with SIGTERM, replaced by {} ({:.1} s into the restarts)",
                replacement.member,
                fault.elapsed().as_secs_f64()
            ));
            s.nodes[i] = replacement;
        }
        let in_time = client.running();
        s.checks.check(in_time, || {
            "the run ended before every node was restarted: the scenario did not test it".into()
        });
        let summary = s.finish_client(client, out, growth).await;
        match summary.retried_for("maybe_ran") {
            None => s.checks.check(false, || {
                "the client's summary has no `retried: <n> (<reason> <n>, …)` line (the client does not report it yet)".into()
            }),
            Some(n) => s
                .checks
                .check(n == 0, || format!("{n} retries for maybe_ran")),
        }
        let _ = s.finish_probe(fault, None, Duration::ZERO).await;
        s.done();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault scenario: run by .ci/run with --release, one at a time"]
async fn a_30_s_consul_outage_and_an_empty_restart_fail_no_call_and_change_no_topology() {
    bounded("d", async {
        let mut s = Scenario::start("d-consul-outage").await;
        let (mut client, out, growth) = s.start_client().await;
        let bind = s
            .consul
            .trim_start_matches("http://")
            .to_string();
        let mut logs: Vec<(String, usize)> = s
            .nodes
            .iter()
            .map(|n| (n.log.display().to_string(), n.log_text().len()))
            .collect();
        logs.push((
            client.log.display().to_string(),
            client.log_text().len(),
        ));
        let fault = Instant::now();
        s.agent.signal(Signal::SIGKILL);
        let _ = s.agent.wait(Duration::from_secs(10)).await;
        // The fault's own duration.
        tokio::time::sleep(Duration::from_secs(30)).await;
        s.agents_started += 1;
        let (agent, again) = cluster::start_agent(&s.dir, &bind, &[], s.agents_started).await;
        s.agent = agent;
        let healed = Instant::now();
        s.checks.figure(&format!(
            "fault: the agent killed after {FAULT_AT} numbers, restarted empty on {again} {:.1} s later",
            (healed - fault).as_secs_f64()
        ));
        s.checks.check(again == s.consul, || {
            format!("the agent came back on {again}, not {}", s.consul)
        });
        // Everyone registers again with the empty agent (the event the grace period
        // is for); the run goes on meanwhile.
        let ids: Vec<String> = s.nodes.iter().map(|n| n.member.clone()).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        cluster::wait_listed(&s.consul, &ids, Duration::from_secs(20)).await;
        let registered = healed.elapsed();
        s.checks.figure(&format!(
            "the four nodes were listed again {:.3} s after the restart",
            registered.as_secs_f64()
        ));
        let in_time = client.running();
        s.checks.check(in_time, || {
            "the run ended before the agent came back: the scenario did not test it".into()
        });
        // Topology changes are counted once every answer is in, before the client
        // leaves (its departure is no change the outage made); the probe's, which
        // leaves after the client, is left out too.
        if let Err(e) =
            cluster::wait_output(&mut client, &out, COUNT, Duration::from_secs(120)).await
        {
            s.checks.figure(&format!("output: {e}"));
        }
        let complete = Instant::now();
        let client_member = client_member(&client.log_text());
        let probe_member = s.prober.as_ref().map(|p| p.member()).unwrap_or_default();
        let changes = s.topology_logs_since(&logs, &[&client_member, &probe_member]);
        let summary = s.finish_client(client, out, growth).await;
        s.checks.check(summary.failed == Some(0), || {
            format!("failed numbers: {:?}", summary.failed)
        });
        let total: usize = changes.iter().map(|(_, n)| n).sum();
        let by: Vec<String> = changes
            .iter()
            .map(|(p, n)| {
                let file = std::path::Path::new(p)
                    .file_name()
                    .map_or(p.clone(), |f| f.to_string_lossy().into_owned());
                format!("{file} {n}")
            })
            .collect();
        s.checks.figure(&format!(
            "topology changes logged after the fault (member joined/left): {total} ({})",
            by.join(", ")
        ));
        s.checks
            .check(total == 0, || format!("{total} topology changes logged: {}", by.join(", ")));
        let record = s.finish_probe(fault, None, Duration::ZERO).await;
        let failed = record.failures_between(Some(fault), None);
        // The client's own joining is no change the outage made (the probe may first see
        // it late); every other member, the probe included, must stay put.
        let probe_changes = record.topology_changes_between(fault, complete, &[&client_member]);
        s.checks.figure(&format!(
            "probe: {failed} failed calls after the fault, {} topology changes of the nodes from the fault to the last answer",
            probe_changes.len()
        ));
        s.checks.check(failed == 0, || format!("{failed} probe calls failed during or after the outage"));
        s.checks.check(probe_changes.is_empty(), || {
            format!("the probe's topology of the nodes changed {} times: {probe_changes:?}", probe_changes.len())
        });
        s.done();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault scenario: run by .ci/run with --release, one at a time"]
async fn a_fizz_cut_off_the_network_for_8_s_has_its_identities_served_elsewhere_within_ttl_plus_1_s()
 {
    // Root only (network namespaces, nftables). Under CI (CI=true) a machine that
    // cannot make one fails the scenario; elsewhere it says so and passes, so the other
    // scenarios still run on an unprivileged machine.
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("[e-partition] CI=true but this machine cannot make a network namespace: {e}")
        }
        Err(e) => {
            println!("[e-partition] SKIPPED: this machine cannot make a network namespace: {e}");
            return;
        }
    };
    bounded("e", async {
        let mut s = Scenario::start_in("e-partition", Some(&ns)).await;
        let (client, out, growth) = s.start_client().await;
        let victim = s.node("fizz-1").member.clone();
        let fault = Instant::now();
        ns.cut();
        // The fault's own duration.
        tokio::time::sleep(Duration::from_secs(8)).await;
        ns.heal();
        let heal = Instant::now();
        s.checks.figure(&format!(
            "fault: {victim} (in network namespace {}, {}) cut off after {FAULT_AT} numbers, healed 8 s later",
            ns.name,
            netns::INSIDE_ADDR
        ));
        let summary = s.finish_client(client, out, growth).await;
        let bound = ttl() + Duration::from_secs(1);
        let round = membership_round();
        let record = s.finish_probe(fault, Some(heal), round * 3).await;
        let (n, moved) = record.moved_away(&victim, fault);
        s.checks.figure(&format!(
            "probe: the {n} identities {victim} served were answered elsewhere {}",
            moved.map_or("never during the cut".into(), |d| format!(
                "within {:.3} s of the cut",
                d.as_secs_f64()
            ))
        ));
        s.checks.check(moved.is_some_and(|d| d <= bound), || {
            format!(
                "the cut-off member's identities were not all served elsewhere within TTL + 1 s ({:.3} s): {}",
                bound.as_secs_f64(),
                moved.map_or("some never moved".into(), |d| format!("{:.3} s", d.as_secs_f64()))
            )
        });
        let unseen = record.unseen_runs().get(&victim).copied().unwrap_or(0);
        s.checks.figure(&format!(
            "probe: {unseen} probe calls ran on {victim} whose answer never came"
        ));
        let (settled, silent) = record.settled_after(heal);
        s.checks.figure(&format!(
            "probe: every identity settled on one answering activation {:.3} s after the heal",
            settled.as_secs_f64()
        ));
        s.checks
            .check(silent.is_empty(), || format!("identities never answered: {silent:?}"));
        s.checks.check(settled <= round, || {
            format!(
                "identities settled {:.3} s after the heal, over one membership round ({:.3} s)",
                settled.as_secs_f64(),
                round.as_secs_f64()
            )
        });
        if let Some(stall) = summary.longest_stall {
            s.checks.figure(&format!(
                "client: longest stall {:.3} s (TTL + 1 s = {:.3} s)",
                stall.as_secs_f64(),
                bound.as_secs_f64()
            ));
        }
        s.done();
    })
    .await;
    drop(ns);
}

/// Not a fault scenario (it runs under plain `cargo test`): the probe grain is hosted
/// only with `--probe`, and answers its member, one activation id and a count that
/// goes up by one per call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_grain_is_hosted_only_when_asked_and_counts_per_activation() {
    bounded("probe", async {
        let dir = cluster::scenario_dir("probe");
        let (_agent, consul) = cluster::start_agent(&dir, "127.0.0.1:0", &[], 1).await;
        let plain = cluster::start_node_with(&dir, "fizz", "fizz-plain", &consul, &[]).await;
        let probed = cluster::start_node(&dir, "buzz", "buzz-probe", &consul).await;
        cluster::wait_listed(
            &consul,
            &[&plain.member, &probed.member],
            Duration::from_secs(20),
        )
        .await;
        let prober = Prober::start(&consul, 2, 1).await;
        let hosts = prober.hosts_of(fizzbuzz::proto::ProbeServiceKind::NAME);
        assert_eq!(
            hosts,
            vec![probed.member.clone()],
            "only the --probe node hosts it"
        );
        // A few rounds: every identity answered, by one activation, counting 1, 2, 3, …
        let answered = prober.wait_rounds(3, Duration::from_secs(20)).await;
        assert!(
            answered,
            "the probe loop did not complete 3 rounds within 20 s"
        );
        let record = prober.stop().await;
        for (i, seen) in record.seen.iter().enumerate() {
            let answers: Vec<&probe::Answer> =
                seen.iter().filter_map(|s| s.answer.as_ref().ok()).collect();
            assert_eq!(answers.len(), seen.len(), "grain{}: {seen:?}", i + 1);
            assert!(answers.len() >= 3, "grain{}: {seen:?}", i + 1);
            for (n, a) in answers.iter().enumerate() {
                assert_eq!(a.member, probed.member);
                assert_eq!(a.activation, answers[0].activation);
                assert!(a.activation.starts_with(&probed.member), "{}", a.activation);
                assert_eq!(a.count, n as u64 + 1);
            }
        }
        assert_ne!(
            record.seen[0][0]
                .answer
                .as_ref()
                .ok()
                .map(|a| &a.activation),
            record.seen[1][0]
                .answer
                .as_ref()
                .ok()
                .map(|a| &a.activation),
            "two identities, two activations"
        );
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}
