#!/usr/bin/env bash
# Checks the deployment configs without running them. Run from the repository root:
#
#   deploy/ci/check-configs.sh [VENV]
#
# VENV: a Python virtualenv to use (created there if the directory is empty or
# missing; default .venv-configs). PyYAML is installed into it with pip.
#
# - promtool check config deploy/prometheus.yml (installs Debian's prometheus
#   package with apt-get when promtool is missing);
# - the collector configs deploy/otel-collector.yaml + deploy/otel-collector.newrelic.yaml,
#   each alone and merged as the collector merges several --config files (maps merge,
#   lists replace): every pipeline's receivers/processors/exporters are defined, every
#   defined component is used, every component type is one this script knows from the
#   contrib distribution;
# - the Grafana provisioning YAML parses, the dashboard JSON parses and every
#   datasource uid it names is a provisioned one;
# - the New Relic dashboard JSON parses.
set -euo pipefail

venv="${1:-.venv-configs}"

if [[ ! -f deploy/prometheus.yml ]]; then
  echo "check-configs: run from the repository root" >&2
  exit 2
fi

# --- Prometheus ------------------------------------------------------------------
if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool missing: installing Debian's prometheus package"
  if [[ $(id -u) -eq 0 ]]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
fi
promtool --version 2>&1 | head -1
promtool check config deploy/prometheus.yml

# --- Python with PyYAML ------------------------------------------------------------
if [[ ! -x "$venv/bin/python" ]]; then
  if [[ -d "$venv" && -n "$(ls -A "$venv")" ]]; then
    echo "check-configs: $venv is not empty and not a virtualenv" >&2
    exit 2
  fi
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import yaml' 2>/dev/null; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check PyYAML
fi

"$venv/bin/python" - <<'PY'
import json
import sys

import yaml

problems = []
checked = []

def load_yaml(path):
    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        problems.append(f"{path}: {e}")
        return None
    if not isinstance(doc, dict):
        problems.append(f"{path}: not a YAML mapping")
        return None
    return doc

def merge(base, overlay):
    """As the collector merges --config files: maps key by key, anything else replaced."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        out = dict(base)
        for k, v in overlay.items():
            out[k] = merge(base[k], v) if k in base else v
        return out
    return overlay

# Component types of the contrib distribution this repository may use (a subset of
# otelcol-contrib v0.114.0's; add here when a config needs another).
KNOWN = {
    "receivers": {"otlp", "hostmetrics", "prometheus", "filelog", "jaeger", "zipkin",
                  "dockerstats", "kubeletstats", "k8s_cluster", "httpcheck"},
    "processors": {"memory_limiter", "batch", "resourcedetection", "resource", "attributes",
                   "filter", "transform", "cumulativetodelta", "deltatocumulative",
                   "k8sattributes", "probabilistic_sampler", "tail_sampling", "groupbyattrs",
                   "metricstransform"},
    "exporters": {"otlp", "otlphttp", "prometheus", "prometheusremotewrite", "debug",
                  "file", "loadbalancing"},
    "connectors": {"forward", "spanmetrics", "count", "routing"},
    "extensions": {"health_check", "pprof", "zpages", "file_storage"},
}
SIGNALS = {"metrics", "traces", "logs"}

def check_collector(name, cfg):
    before = len(problems)
    service = cfg.get("service") or {}
    pipelines = service.get("pipelines") or {}
    if not pipelines:
        problems.append(f"{name}: no service.pipelines")
    used = {kind: set() for kind in ("receivers", "processors", "exporters")}
    for kind in KNOWN:
        for comp in (cfg.get(kind) or {}):
            ctype = comp.split("/", 1)[0]
            if ctype not in KNOWN[kind]:
                problems.append(f"{name}: {kind[:-1]} {comp!r}: type {ctype!r} is not a known contrib {kind[:-1]}")
    for pname, p in pipelines.items():
        signal = pname.split("/", 1)[0]
        if signal not in SIGNALS:
            problems.append(f"{name}: pipeline {pname!r}: not a metrics, traces or logs pipeline")
        p = p or {}
        for kind in ("receivers", "processors", "exporters"):
            ids = p.get(kind) or []
            if kind != "processors" and not ids:
                problems.append(f"{name}: pipeline {pname!r} has no {kind}")
            if not isinstance(ids, list):
                problems.append(f"{name}: pipeline {pname!r}: {kind} is not a list")
                continue
            for comp in ids:
                used[kind].add(comp)
                if comp not in (cfg.get(kind) or {}) and comp not in (cfg.get("connectors") or {}):
                    problems.append(f"{name}: pipeline {pname!r} uses {kind[:-1]} {comp!r}, which is not defined")
    for kind in used:
        for comp in (cfg.get(kind) or {}):
            if comp not in used[kind]:
                problems.append(f"{name}: {kind[:-1]} {comp!r} is defined but no pipeline uses it")
    for ext in service.get("extensions") or []:
        if ext not in (cfg.get("extensions") or {}):
            problems.append(f"{name}: service uses extension {ext!r}, which is not defined")
    if len(problems) == before:
        counts = ", ".join(f"{len(cfg.get(k) or {})} {k}" for k in ("receivers", "processors", "exporters"))
        checked.append(f"collector config {name}: {len(pipelines)} pipelines, {counts}")

base = load_yaml("deploy/otel-collector.yaml")
overlay = load_yaml("deploy/otel-collector.newrelic.yaml")
if base is not None:
    check_collector("deploy/otel-collector.yaml", base)
    exporters = base.get("exporters") or {}
    prom = exporters.get("prometheus") or {}
    if not (prom.get("resource_to_telemetry_conversion") or {}).get("enabled"):
        problems.append("deploy/otel-collector.yaml: prometheus exporter without resource_to_telemetry_conversion.enabled (no service_name/service_instance_id labels)")
if base is not None and overlay is not None:
    merged = merge(base, overlay)
    check_collector("otel-collector.yaml + otel-collector.newrelic.yaml (merged)", merged)
    pipelines = (merged.get("service") or {}).get("pipelines") or {}
    for signal in sorted(SIGNALS):
        exps = (pipelines.get(signal) or {}).get("exporters") or []
        base_exps = (((base.get("service") or {}).get("pipelines") or {}).get(signal) or {}).get("exporters") or []
        if "otlphttp/newrelic" not in exps:
            problems.append(f"merged collector config: the {signal} pipeline does not export to otlphttp/newrelic")
        lost = [e for e in base_exps if e not in exps]
        if lost:
            problems.append(f"merged collector config: the overlay drops the {signal} pipeline's exporters {lost} (lists replace, not append)")

# Grafana provisioning
ds = load_yaml("deploy/grafana/provisioning/datasources/datasources.yaml")
uids = set()
if ds is not None:
    for d in ds.get("datasources") or []:
        if not d.get("uid") or not d.get("type") or not d.get("url"):
            problems.append(f"datasources.yaml: datasource {d.get('name')!r} lacks uid, type or url")
        uids.add(d.get("uid"))
    defaults = [d.get("name") for d in ds.get("datasources") or [] if d.get("isDefault")]
    if len(defaults) != 1:
        problems.append(f"datasources.yaml: {len(defaults)} default datasources, want 1")
    checked.append(f"grafana datasources: {', '.join(sorted(u for u in uids if u))}")
prov = load_yaml("deploy/grafana/provisioning/dashboards/dashboards.yaml")
if prov is not None:
    paths = [(p.get("options") or {}).get("path") for p in prov.get("providers") or []]
    if not paths or not all(paths):
        problems.append("dashboards.yaml: a provider without options.path")
    checked.append(f"grafana dashboard providers: {', '.join(map(str, paths))}")

def datasource_uids(node, out):
    if isinstance(node, dict):
        d = node.get("datasource")
        if isinstance(d, dict) and "uid" in d:
            out.append(d["uid"])
        for v in node.values():
            datasource_uids(v, out)
    elif isinstance(node, list):
        for v in node:
            datasource_uids(v, out)

def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        problems.append(f"{path}: {e}")
        return None

dash_path = "deploy/grafana/dashboards/fizzbuzz.json"
dash = load_json(dash_path)
if dash is not None:
    refs = []
    datasource_uids(dash, refs)
    for uid in sorted(set(refs)):
        if uid.startswith("$") or uid == "-- Grafana --":
            continue
        if uid not in uids:
            problems.append(f"{dash_path}: datasource uid {uid!r} is not provisioned (have {sorted(uids)})")
    if dash.get("schemaVersion") != 39:
        problems.append(f"{dash_path}: schemaVersion {dash.get('schemaVersion')}, want 39")
    checked.append(f"grafana dashboard {dash_path}: {len(refs)} datasource references to {sorted(set(refs))}")

nr_path = "deploy/newrelic/dashboard.json"
nr = load_json(nr_path)
if nr is not None:
    queries = [q for p in nr.get("pages") or [] for w in p.get("widgets") or []
               for q in (w.get("rawConfiguration") or {}).get("nrqlQueries") or []]
    if not queries or not all(q.get("query") and isinstance(q.get("accountIds"), list) for q in queries):
        problems.append(f"{nr_path}: widgets need rawConfiguration.nrqlQueries[] with query and accountIds")
    checked.append(f"new relic dashboard {nr_path}: {len(queries)} NRQL queries")

for c in checked:
    print("ok:", c)
if problems:
    for p in problems:
        print("FAIL:", p, file=sys.stderr)
    sys.exit(1)
PY

echo "configs: prometheus.yml, otel-collector.yaml (+ newrelic overlay, merged), grafana provisioning, grafana and new relic dashboards checked"
