//! The dev agent's catalog: services, their TTL checks, and the index that blocking
//! queries wait on.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::DevAgentConfig;
use crate::api::{
    AgentService, HealthCheck, Node, ServiceEntry, ServiceRegistration, Weights, parse_go_duration,
};
use crate::config::Token;

struct CheckRecord {
    check: HealthCheck,
    ttl: Option<Duration>,
    expires: Option<Instant>,
    reap_after: Option<Duration>,
    critical_since: Option<Instant>,
}

struct ServiceRecord {
    service: AgentService,
    checks: Vec<CheckRecord>,
}

pub(crate) struct Registry {
    index: u64,
    services: BTreeMap<String, ServiceRecord>,
    /// The index at which each service name's health last changed.
    service_index: HashMap<String, u64>,
}

impl Registry {
    fn bump(&mut self, name: &str) -> u64 {
        self.index += 1;
        self.service_index.insert(name.to_string(), self.index);
        self.index
    }

    fn name_index(&self, name: &str) -> u64 {
        self.service_index.get(name).copied().unwrap_or(1).max(1)
    }
}

pub(crate) struct AgentState {
    pub(crate) token: Option<Token>,
    pub(crate) datacenter: String,
    node: Node,
    leader: String,
    min_reap: Duration,
    registry: Mutex<Registry>,
    changed: watch::Sender<u64>,
}

fn valid_status(s: &str) -> bool {
    matches!(s, "passing" | "warning" | "critical")
}

impl AgentState {
    pub(crate) fn new(config: &DevAgentConfig, addr: SocketAddr) -> Self {
        let ip = addr.ip().to_string();
        let node = Node {
            id: "00000000-0000-4000-8000-000000000001".into(),
            node: config.node_name.clone(),
            address: ip.clone(),
            datacenter: config.datacenter.clone(),
            tagged_addresses: [
                ("lan".to_string(), ip.clone()),
                ("wan".to_string(), ip.clone()),
            ]
            .into_iter()
            .collect(),
            meta: HashMap::new(),
            create_index: 1,
            modify_index: 1,
        };
        Self {
            token: config.token.clone(),
            datacenter: config.datacenter.clone(),
            node,
            leader: format!("{ip}:8300"),
            min_reap: config.min_deregister_critical_after,
            registry: Mutex::new(Registry {
                index: 1,
                services: BTreeMap::new(),
                service_index: HashMap::new(),
            }),
            changed: watch::channel(1).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the catalog half-written (every
        // change is a single insert or field update), so a poisoned lock is still usable.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self, index: u64) {
        self.changed.send_replace(index);
    }

    pub(crate) fn register(
        &self,
        reg: ServiceRegistration,
        replace_checks: bool,
    ) -> Result<(), String> {
        if reg.name.trim().is_empty() {
            return Err("Missing service name".into());
        }
        let id = reg
            .id
            .clone()
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| reg.name.clone());
        // As Consul: `Check` then `Checks`; default ids `service:<id>` for a single check,
        // `service:<id>:<n>` (1-based) when there are several.
        let all: Vec<_> = reg
            .check
            .clone()
            .into_iter()
            .chain(reg.checks.clone().unwrap_or_default())
            .collect();
        let several = all.len() > 1;
        let defs: Vec<_> = all
            .into_iter()
            .enumerate()
            .map(|(n, c)| {
                let default_id = if several {
                    format!("service:{id}:{}", n + 1)
                } else {
                    format!("service:{id}")
                };
                (c, default_id)
            })
            .collect();
        let now = Instant::now();
        let mut checks = Vec::new();
        for (def, default_id) in defs {
            let check_id = def
                .check_id
                .clone()
                .filter(|c| !c.is_empty())
                .unwrap_or(default_id);
            if def.http.is_some() || def.tcp.is_some() || def.grpc.is_some() {
                return Err(format!(
                    "check {check_id:?}: the grain dev agent supports only TTL checks"
                ));
            }
            let ttl_text = def.ttl.clone().ok_or_else(|| {
                format!(
                    "check {check_id:?} has no TTL: the grain dev agent supports only TTL checks"
                )
            })?;
            let ttl = parse_go_duration(&ttl_text)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    format!("Invalid check: TTL {ttl_text:?} is not a positive duration")
                })?;
            let status = def
                .status
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "critical".into());
            if !valid_status(&status) {
                return Err(format!("Invalid check status: \"{status}\""));
            }
            let reap_after = match &def.deregister_critical_service_after {
                Some(t) => Some(
                    parse_go_duration(t)
                        .ok_or_else(|| format!("Invalid DeregisterCriticalServiceAfter: {t:?}"))?
                        .max(self.min_reap),
                ),
                None => None,
            };
            checks.push(CheckRecord {
                check: HealthCheck {
                    node: self.node.node.clone(),
                    check_id: check_id.clone(),
                    name: def
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("Service '{}' check", reg.name)),
                    status: status.clone(),
                    notes: def.notes.clone().unwrap_or_default(),
                    output: String::new(),
                    service_id: id.clone(),
                    service_name: reg.name.clone(),
                    service_tags: reg.tags.clone().unwrap_or_default(),
                    kind: "ttl".into(),
                    create_index: 0,
                    modify_index: 0,
                },
                ttl: Some(ttl),
                expires: (status != "critical").then_some(now + ttl),
                reap_after,
                critical_since: (status == "critical").then_some(now),
            });
        }
        let mut reg_lock = self.lock();
        let previous = reg_lock.services.remove(&id);
        if let Some(prev) = &previous {
            if prev.service.service != reg.name {
                let old = prev.service.service.clone();
                reg_lock.bump(&old);
            }
            if !replace_checks {
                // Keep checks the new registration does not mention.
                for c in prev.checks.iter() {
                    if !checks.iter().any(|n| n.check.check_id == c.check.check_id) {
                        checks.push(CheckRecord {
                            check: c.check.clone(),
                            ttl: c.ttl,
                            expires: c.expires,
                            reap_after: c.reap_after,
                            critical_since: c.critical_since,
                        });
                    }
                }
            }
        }
        let index = reg_lock.bump(&reg.name);
        for c in checks.iter_mut() {
            c.check.create_index = index;
            c.check.modify_index = index;
        }
        let service = AgentService {
            id: id.clone(),
            service: reg.name.clone(),
            tags: reg.tags.unwrap_or_default(),
            address: reg.address.unwrap_or_default(),
            meta: reg.meta.unwrap_or_default(),
            port: reg.port.unwrap_or(0),
            weights: Weights::default(),
            enable_tag_override: false,
            datacenter: self.datacenter.clone(),
            create_index: previous.as_ref().map_or(index, |p| p.service.create_index),
            modify_index: index,
        };
        reg_lock
            .services
            .insert(id, ServiceRecord { service, checks });
        drop(reg_lock);
        self.notify(index);
        Ok(())
    }

    pub(crate) fn deregister(&self, id: &str) -> bool {
        let mut reg = self.lock();
        let Some(old) = reg.services.remove(id) else {
            return false;
        };
        let index = reg.bump(&old.service.service);
        drop(reg);
        self.notify(index);
        true
    }

    pub(crate) fn update_check(&self, check_id: &str, status: &str, output: String) -> bool {
        let now = Instant::now();
        let mut reg = self.lock();
        let mut changed_service = None;
        let mut found = false;
        for rec in reg.services.values_mut() {
            for c in rec
                .checks
                .iter_mut()
                .filter(|c| c.check.check_id == check_id)
            {
                found = true;
                if let Some(ttl) = c.ttl {
                    c.expires = Some(now + ttl);
                }
                let status_changed = c.check.status != status;
                if status_changed || c.check.output != output {
                    if status_changed {
                        // Consul reaps by the time the check *became* critical.
                        c.critical_since = (status == "critical").then_some(now);
                    }
                    c.check.status = status.to_string();
                    c.check.output = output.clone();
                    changed_service = Some(rec.service.service.clone());
                }
            }
        }
        if let Some(name) = changed_service {
            let index = reg.bump(&name);
            for rec in reg.services.values_mut() {
                for c in rec
                    .checks
                    .iter_mut()
                    .filter(|c| c.check.check_id == check_id)
                {
                    c.check.modify_index = index;
                }
            }
            drop(reg);
            self.notify(index);
        }
        found
    }

    /// Turns expired TTL checks critical and reaps services critical for too long.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let mut reg = self.lock();
        let mut changed: Vec<String> = Vec::new();
        let mut reaped: Vec<String> = Vec::new();
        for (id, rec) in reg.services.iter_mut() {
            for c in rec.checks.iter_mut() {
                if c.check.status != "critical" && c.expires.is_some_and(|e| e <= now) {
                    c.check.status = "critical".into();
                    c.check.output = "TTL expired".into();
                    c.critical_since = Some(now);
                    changed.push(rec.service.service.clone());
                }
                if let (Some(since), Some(after)) = (c.critical_since, c.reap_after)
                    && now.duration_since(since) >= after
                {
                    reaped.push(id.clone());
                }
            }
        }
        for id in reaped {
            if let Some(rec) = reg.services.remove(&id) {
                tracing::info!(service = %rec.service.service, id = %id, "reaped a service critical for too long");
                changed.push(rec.service.service);
            }
        }
        if changed.is_empty() {
            return;
        }
        let mut index = 0;
        for name in changed {
            index = reg.bump(&name);
        }
        drop(reg);
        self.notify(index);
    }

    /// Waits until the health of `name` changes past `index`, or `deadline`.
    pub(crate) async fn wait_for_change(&self, name: &str, index: u64, deadline: Instant) {
        let mut rx = self.changed.subscribe();
        loop {
            rx.mark_unchanged();
            if self.lock().name_index(name) > index {
                return;
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    pub(crate) fn health(&self, name: &str, passing_only: bool) -> (Vec<ServiceEntry>, u64) {
        let reg = self.lock();
        let serf = HealthCheck {
            node: self.node.node.clone(),
            check_id: "serfHealth".into(),
            name: "Serf Health Status".into(),
            status: "passing".into(),
            output: "Agent alive and reachable".into(),
            create_index: 1,
            modify_index: 1,
            ..HealthCheck::default()
        };
        let entries = reg
            .services
            .values()
            .filter(|r| r.service.service == name)
            .filter(|r| !passing_only || r.checks.iter().all(|c| c.check.status == "passing"))
            .map(|r| ServiceEntry {
                node: self.node.clone(),
                service: r.service.clone(),
                checks: std::iter::once(serf.clone())
                    .chain(r.checks.iter().map(|c| c.check.clone()))
                    .collect(),
            })
            .collect();
        (entries, reg.name_index(name))
    }

    pub(crate) fn agent_services(&self) -> (BTreeMap<String, AgentService>, u64) {
        let reg = self.lock();
        let services = reg
            .services
            .iter()
            .map(|(id, r)| (id.clone(), r.service.clone()))
            .collect();
        (services, reg.index)
    }

    pub(crate) fn catalog_services(&self) -> (BTreeMap<String, Vec<String>>, u64) {
        let reg = self.lock();
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        out.insert("consul".into(), Vec::new());
        for r in reg.services.values() {
            let tags = out.entry(r.service.service.clone()).or_default();
            for t in &r.service.tags {
                if !tags.contains(t) {
                    tags.push(t.clone());
                }
            }
        }
        (out, reg.index)
    }

    pub(crate) fn leader(&self) -> String {
        self.leader.clone()
    }
}
