//! The probe loop: the test process joins the cluster as a member hosting nothing and
//! calls `ProbeService/Where` for every identity, round after round, recording who
//! answered — member, activation, that activation's call count — so that a second
//! answering activation, or a stale one coming back, is visible (FizzBuzz grains keep no
//! state: their output cannot show it).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fizzbuzz::proto::{ProbeServiceClient, ProbeServiceKind, WhereRequest};
use grain::{CallOptions, Node, NodeConfig};
use grain_consul::{ConsulConfig, ConsulMembership};
use tokio::sync::watch;
use tokio::time::Instant;

use super::cluster::CLUSTER;

/// Pause between two probe rounds.
pub(crate) const ROUND_EVERY: Duration = Duration::from_millis(100);
/// The deadline of one probe call.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// One answer (or failure) for one identity.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    /// When the answer came.
    pub(crate) at: Instant,
    /// Who answered, or why the call failed.
    pub(crate) answer: Result<Answer, String>,
}

/// What `Where` answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The member.
    pub(crate) member: String,
    /// The activation.
    pub(crate) activation: String,
    /// That activation's calls so far.
    pub(crate) count: u64,
}

/// The probe loop, running.
pub(crate) struct Prober {
    node: Option<Node>,
    cluster: grain::Cluster,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    record: Arc<Mutex<Record>>,
}

/// Everything the probe loop saw.
#[derive(Debug, Default)]
pub(crate) struct Record {
    /// Per identity (`grain1` is index 0), its answers in the order they came; calls for
    /// one identity are made one after another, so this is also the order they ran.
    pub(crate) seen: Vec<Vec<Seen>>,
    /// When the probe's own topology changed (members joined or left), and to what.
    pub(crate) topology: Vec<(Instant, BTreeSet<String>)>,
}

impl Prober {
    /// Joins the cluster at `consul` as a member hosting nothing, waits until it sees
    /// `hosts` members hosting ProbeService, and starts probing `identities` identities.
    pub(crate) async fn start(consul: &str, identities: usize, hosts: usize) -> Self {
        let config = NodeConfig {
            cluster_name: CLUSTER.into(),
            member_prefix: "probe".into(),
            ..NodeConfig::default()
        };
        let membership = ConsulMembership::new(
            CLUSTER,
            ConsulConfig {
                address: consul.to_string(),
                role: "probe".into(),
                ..ConsulConfig::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let node = Node::start(config, vec![], Arc::new(membership))
            .await
            .unwrap_or_else(|e| panic!("the probe node did not start: {e}"));
        let cluster = node.cluster();
        let seen_all = cluster
            .wait_until(Duration::from_secs(20), |t| {
                t.members()
                    .iter()
                    .filter(|m| m.hosts(ProbeServiceKind::NAME))
                    .count()
                    >= hosts
            })
            .await;
        assert!(
            seen_all,
            "the probe node did not see {hosts} ProbeService members within 20 s: {:?}",
            cluster.topology().members()
        );
        let record = Arc::new(Mutex::new(Record {
            seen: vec![Vec::new(); identities],
            topology: Vec::new(),
        }));
        let (stop, mut stopped) = watch::channel(false);
        let shared = record.clone();
        let handle = cluster.clone();
        let task = tokio::spawn(async move {
            let options = CallOptions::default().with_timeout(CALL_TIMEOUT);
            let clients: Vec<ProbeServiceClient> = (1..=identities)
                .map(|i| {
                    ProbeServiceClient::new(&cluster, format!("grain{i}"))
                        .with_options(options.clone())
                })
                .collect();
            let mut ticker = tokio::time::interval(ROUND_EVERY);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut members = BTreeSet::new();
            loop {
                tokio::select! {
                    _ = stopped.wait_for(|s| *s) => return,
                    _ = ticker.tick() => {}
                }
                let now: BTreeSet<String> = cluster
                    .topology()
                    .members()
                    .iter()
                    .map(|m| m.id.to_string())
                    .collect();
                if now != members {
                    lock(&shared).topology.push((Instant::now(), now.clone()));
                    members = now;
                }
                let round = futures::future::join_all(clients.iter().map(|c| async move {
                    let answer = c.r#where(WhereRequest {}).await;
                    let at = Instant::now();
                    let answer = answer
                        .map(|w| Answer {
                            member: w.member_id,
                            activation: w.activation_id,
                            count: w.count,
                        })
                        .map_err(|e| e.to_string());
                    Seen { at, answer }
                }))
                .await;
                let mut record = lock(&shared);
                for (i, seen) in round.into_iter().enumerate() {
                    record.seen[i].push(seen);
                }
            }
        });
        Self {
            node: Some(node),
            cluster: handle,
            stop,
            task: Some(task),
            record,
        }
    }

    /// The members hosting `kind` in the probe's topology.
    pub(crate) fn hosts_of(&self, kind: &str) -> Vec<String> {
        self.cluster
            .topology()
            .members()
            .iter()
            .filter(|m| m.hosts(kind))
            .map(|m| m.id.to_string())
            .collect()
    }

    /// Waits until the probe loop has completed `rounds` rounds, at most `limit`.
    pub(crate) async fn wait_rounds(&self, rounds: usize, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if lock(&self.record).seen.iter().all(|s| s.len() >= rounds) {
                return true;
            }
            tokio::time::sleep(ROUND_EVERY).await;
        }
        false
    }

    /// The probe's member id.
    pub(crate) fn member(&self) -> String {
        self.cluster.member().id.to_string()
    }

    /// Waits until the probe's own topology (a member like any other) lists every one
    /// of `present` and none of `absent`, at most `limit`; true if it did.
    pub(crate) async fn wait_members(
        &self,
        present: &[&str],
        absent: &[&str],
        limit: Duration,
    ) -> bool {
        self.cluster
            .wait_until(limit, |t| {
                let has = |id: &str| t.members().iter().any(|m| m.id.as_str() == id);
                present.iter().all(|id| has(id)) && !absent.iter().any(|id| has(id))
            })
            .await
    }

    /// Stops probing, leaves the cluster, and returns what was seen.
    pub(crate) async fn stop(mut self) -> Record {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        if let Some(node) = self.node.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), node.shutdown()).await;
        }
        std::mem::take(&mut *lock(&self.record))
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn lock(record: &Mutex<Record>) -> std::sync::MutexGuard<'_, Record> {
    record.lock().unwrap_or_else(|e| e.into_inner())
}

/// A stale activation: `activation` answered `identity` again after `other` had.
#[derive(Debug)]
pub(crate) struct Stale {
    /// `grainN`.
    pub(crate) identity: String,
    /// The activation that came back.
    pub(crate) activation: String,
    /// The one that had answered in between.
    pub(crate) other: String,
    /// When it came back.
    pub(crate) at: Instant,
}

impl Record {
    /// Answers of identity `i` (index), in order, failures left out.
    fn answers(&self, i: usize) -> impl Iterator<Item = (Instant, &Answer)> {
        self.seen[i]
            .iter()
            .filter_map(|s| s.answer.as_ref().ok().map(|a| (s.at, a)))
    }

    /// Calls made and calls that failed.
    pub(crate) fn calls(&self) -> (usize, usize) {
        let all = self.seen.iter().map(Vec::len).sum();
        let failed = self.failures_between(None, None);
        (all, failed)
    }

    /// Failed calls answered in `[from, to)` (open ends: no bound).
    pub(crate) fn failures_between(&self, from: Option<Instant>, to: Option<Instant>) -> usize {
        self.seen
            .iter()
            .flatten()
            .filter(|s| s.answer.is_err())
            .filter(|s| from.is_none_or(|f| s.at >= f) && to.is_none_or(|t| s.at < t))
            .count()
    }

    /// The first failure, for messages.
    pub(crate) fn first_failure(&self) -> Option<String> {
        self.seen
            .iter()
            .flatten()
            .find_map(|s| s.answer.as_ref().err().cloned())
    }

    /// Activations that answered an identity again after another activation had:
    /// two answering activations of one identity, one of them stale.
    pub(crate) fn stale(&self) -> Vec<Stale> {
        let mut out = Vec::new();
        for i in 0..self.seen.len() {
            let mut retired: HashMap<&str, &str> = HashMap::new();
            let mut current: Option<&str> = None;
            for (at, a) in self.answers(i) {
                if current == Some(a.activation.as_str()) {
                    continue;
                }
                if let Some(other) = retired.get(a.activation.as_str()) {
                    out.push(Stale {
                        identity: format!("grain{}", i + 1),
                        activation: a.activation.clone(),
                        other: other.to_string(),
                        at,
                    });
                }
                if let Some(c) = current {
                    retired.insert(c, a.activation.as_str());
                }
                current = Some(a.activation.as_str());
            }
        }
        out
    }

    /// Calls an activation ran whose answer the probe never got, by member: gaps in
    /// its count (a call that timed out here and ran there anyway, e.g. after SIGCONT).
    /// Only the probe calls ProbeService, so every count is one of its calls.
    pub(crate) fn unseen_runs(&self) -> BTreeMap<String, u64> {
        let mut unseen = BTreeMap::new();
        for i in 0..self.seen.len() {
            let mut last: HashMap<&str, u64> = HashMap::new();
            for (_, a) in self.answers(i) {
                let before = last.insert(a.activation.as_str(), a.count).unwrap_or(0);
                let gap = a.count.saturating_sub(before + 1);
                if gap > 0 {
                    *unseen.entry(a.member.clone()).or_insert(0) += gap;
                }
            }
        }
        unseen
    }

    /// The member whose activation answered identity `i` last before `t`.
    pub(crate) fn owner_before(&self, i: usize, t: Instant) -> Option<&str> {
        self.answers(i)
            .take_while(|(at, _)| *at < t)
            .last()
            .map(|(_, a)| a.member.as_str())
    }

    /// For the identities `member` answered last before `t`: how long after `t` the
    /// first answer from another member came (the longest), and how many identities
    /// that was; `None` when one of them never moved.
    pub(crate) fn moved_away(&self, member: &str, t: Instant) -> (usize, Option<Duration>) {
        let mut longest = Duration::ZERO;
        let mut n = 0;
        for i in 0..self.seen.len() {
            if self.owner_before(i, t) != Some(member) {
                continue;
            }
            n += 1;
            let moved = self
                .answers(i)
                .find(|(at, a)| *at >= t && a.member != member)
                .map(|(at, _)| at - t);
            match moved {
                Some(d) => longest = longest.max(d),
                None => return (n, None),
            }
        }
        (n, Some(longest))
    }

    /// How long after `t` every identity was answered by the one activation that
    /// answered it from then on (the latest such start over all identities; zero when
    /// none changed after `t`), and the identities with no answer after that point.
    pub(crate) fn settled_after(&self, t: Instant) -> (Duration, Vec<String>) {
        let mut latest = Duration::ZERO;
        let mut silent = Vec::new();
        for i in 0..self.seen.len() {
            let answers: Vec<(Instant, &Answer)> = self.answers(i).collect();
            let Some((_, last)) = answers.last() else {
                silent.push(format!("grain{}", i + 1));
                continue;
            };
            // The start of the final run of the last activation.
            let start = answers
                .iter()
                .rev()
                .take_while(|(_, a)| a.activation == last.activation)
                .last()
                .map(|(at, _)| *at);
            if let Some(start) = start
                && start > t
            {
                latest = latest.max(start - t);
            }
        }
        (latest, silent)
    }

    /// The distinct activations that answered, over all identities.
    pub(crate) fn activations(&self) -> usize {
        let mut all = BTreeSet::new();
        for i in 0..self.seen.len() {
            for (_, a) in self.answers(i) {
                all.insert(a.activation.as_str());
            }
        }
        all.len()
    }

    /// Writes every answer to `path`, one line each: identity, seconds since `origin`
    /// (negative before it), then member, activation and count, or `error` and why.
    pub(crate) fn write_tsv(&self, path: &std::path::Path, origin: Instant) {
        use std::fmt::Write as _;
        let mut text = String::from("identity\tseconds\tmember\tactivation\tcount\n");
        for (i, seen) in self.seen.iter().enumerate() {
            for s in seen {
                let t = if s.at >= origin {
                    (s.at - origin).as_secs_f64()
                } else {
                    -(origin - s.at).as_secs_f64()
                };
                let _ = match &s.answer {
                    Ok(a) => writeln!(
                        text,
                        "grain{}\t{t:.3}\t{}\t{}\t{}",
                        i + 1,
                        a.member,
                        a.activation,
                        a.count
                    ),
                    Err(e) => writeln!(text, "grain{}\t{t:.3}\terror\t{e}\t", i + 1),
                };
            }
        }
        let _ = std::fs::write(path, text);
    }

    /// Changes of the probe's own topology in `[from, to)`, leaving out the members
    /// `ignoring`, each change with its time after `from` and the members it left.
    pub(crate) fn topology_changes_between(
        &self,
        from: Instant,
        to: Instant,
        ignoring: &[&str],
    ) -> Vec<(Duration, BTreeSet<String>)> {
        let mut changes = Vec::new();
        let mut before: Option<BTreeSet<String>> = None;
        for (at, members) in &self.topology {
            let now: BTreeSet<String> = members
                .iter()
                .filter(|m| !ignoring.contains(&m.as_str()))
                .cloned()
                .collect();
            if *at >= from && *at < to && before.as_ref().is_some_and(|b| *b != now) {
                changes.push((at.saturating_duration_since(from), now.clone()));
            }
            before = Some(now);
        }
        changes
    }
}
