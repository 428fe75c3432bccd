"""Checks on built kustomize outputs that schema validation cannot make.

Usage: check_kubernetes.py REPO_ROOT BUILD.yaml...   (run by check-kubernetes.sh)

Each BUILD.yaml is one `kustomize build` of an entry point. Prints one line per
problem and exits 1 if there is any; prints the number of manifests checked otherwise.
"""

import base64
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import yaml

NAMESPACE = "fizzbuzz"
NODE_IMAGE = "fizzbuzz-grains"
NODES = {"fizz", "buzz", "client"}
HEALTH_PORT = 7071
LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/part-of", "app.kubernetes.io/component")
CONFIG_KEYS = {
    "FIZZBUZZ_CLUSTER": "fizzbuzz-cluster",
    "FIZZBUZZ_LOG_FORMAT": "json",
    "FIZZBUZZ_LOG": "info",
    "FIZZBUZZ_METRICS_INTERVAL": "10s",
    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
    "OTEL_TRACES_SAMPLER_ARG": "0.1",
}
LICENCE_ENV = "NEW_RELIC_LICENSE_KEY"
# A New Relic ingest licence key (40 characters, ending NRAL) or a user key (NRAK-...).
KEY_PATTERNS = [re.compile(r"\b[0-9A-Za-z]{36}NRAL\b"), re.compile(r"\bNRAK-[0-9A-Z]{27}\b")]
CLUSTER_SCOPED = {"Namespace"}

problems = []


def problem(where, what):
    problems.append(f"{where}: {what}")


def containers(dep):
    spec = dep["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def image_name(image):
    # registry/path/name:tag@digest -> name
    return image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]


def env_list(c):
    return c.get("env", [])


def check_probes(where, c):
    ready = c.get("readinessProbe") or {}
    live = c.get("livenessProbe") or {}
    rg, lg = ready.get("grpc"), live.get("grpc")
    if not rg or rg.get("port") != HEALTH_PORT or rg.get("service", "") != "":
        problem(where, f'readinessProbe must be grpc on port {HEALTH_PORT}, service "" (omitted)')
    if not lg or lg.get("port") != HEALTH_PORT or lg.get("service") != "liveness":
        problem(where, f"livenessProbe must be grpc on port {HEALTH_PORT}, service liveness")
    start = c.get("startupProbe")
    if start and (start.get("grpc") or {}).get("service") != "liveness":
        problem(where, "startupProbe must ask the liveness service (a Consul outage must not restart it)")


def check_security(where, pod, c):
    sc = c.get("securityContext") or {}
    psc = pod.get("securityContext") or {}

    def get(key):
        return sc.get(key, psc.get(key))

    if get("runAsNonRoot") is not True:
        problem(where, "securityContext.runAsNonRoot must be true")
    if get("runAsUser") != 10001:
        problem(where, "securityContext.runAsUser must be 10001 (the image's user)")
    if sc.get("readOnlyRootFilesystem") is not True:
        problem(where, "securityContext.readOnlyRootFilesystem must be true")
    if sc.get("allowPrivilegeEscalation") is not False:
        problem(where, "securityContext.allowPrivilegeEscalation must be false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        problem(where, "securityContext.capabilities.drop must include ALL")
    if (get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problem(where, "seccompProfile must be RuntimeDefault")


def check_node_tls(where, pod, c, secrets):
    """Every node speaks mutual TLS to its peers: the three files from the Secret
    fizzbuzz-tls (in this build), mounted read-only, and the server name its peers'
    certificates hold (pod IPs are not known when certificates are made)."""
    env = {e["name"]: e.get("value") for e in env_list(c)}
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    tls_volume = None
    for name, m in mounts.items():
        secret = ((volumes.get(name) or {}).get("secret") or {}).get("secretName", "")
        if secret.startswith("fizzbuzz-tls"):
            tls_volume = (m, secret)
    if tls_volume is None:
        problem(where, "no volume from the Secret fizzbuzz-tls: members would talk plaintext")
        return
    mount, secret = tls_volume
    if secret not in secrets:
        problem(where, f"the TLS volume's Secret {secret} is not in this build")
    if not mount.get("readOnly"):
        problem(where, "the TLS volume must be mounted readOnly")
    base = mount["mountPath"].rstrip("/")
    for var, file in (("FIZZBUZZ_TLS_CERT", "member.pem"), ("FIZZBUZZ_TLS_KEY", "member-key.pem"),
                      ("FIZZBUZZ_TLS_CA", "ca.pem")):
        if env.get(var) != f"{base}/{file}":
            problem(where, f"{var} is {env.get(var)!r}, want {base}/{file} (mutual TLS)")
    if not env.get("FIZZBUZZ_TLS_SERVER_NAME"):
        problem(where, "FIZZBUZZ_TLS_SERVER_NAME is not set: a certificate cannot name a pod IP in advance")


def check_node_env(where, c, config):
    env = env_list(c)
    names = [e["name"] for e in env]
    values = {e["name"]: e.get("value") for e in env}
    if "POD_IP" not in names:
        problem(where, "no POD_IP env var")
    else:
        pod_ip = env[names.index("POD_IP")]
        if ((pod_ip.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") != "status.podIP":
            problem(where, "POD_IP must come from the downward API (status.podIP)")
        if "FIZZBUZZ_ADVERTISE" in names and names.index("FIZZBUZZ_ADVERTISE") < names.index("POD_IP"):
            problem(where, "POD_IP must be defined before FIZZBUZZ_ADVERTISE, or $(POD_IP) is not expanded")
    for name, want in (
        ("FIZZBUZZ_ADVERTISE", "$(POD_IP):7070"),
        ("FIZZBUZZ_BIND", "0.0.0.0:7070"),
        ("FIZZBUZZ_HEALTH_BIND", f"0.0.0.0:{HEALTH_PORT}"),
    ):
        if values.get(name) != want:
            problem(where, f"{name} must be {want!r}, not {values.get(name)!r}")
    refs = [(f.get("configMapRef") or {}).get("name") for f in c.get("envFrom", [])]
    if "fizzbuzz-config" not in refs:
        problem(where, "must read the ConfigMap fizzbuzz-config with envFrom")
    # With the licence key the nodes send to New Relic, unless FIZZBUZZ_OTLP_ENDPOINT is
    # set: that one would win, so the two must not come together.
    has_key = LICENCE_ENV in names
    has_endpoint = "FIZZBUZZ_OTLP_ENDPOINT" in names or "FIZZBUZZ_OTLP_ENDPOINT" in config
    if has_key and has_endpoint:
        problem(where, f"{LICENCE_ENV} with FIZZBUZZ_OTLP_ENDPOINT: the endpoint wins over New Relic's")
    if not has_key and not has_endpoint:
        problem(where, f"neither FIZZBUZZ_OTLP_ENDPOINT nor {LICENCE_ENV}: no telemetry export")


def check_secret_refs(where, c):
    for e in env_list(c):
        vf = e.get("valueFrom") or {}
        if "secretKeyRef" in vf and vf["secretKeyRef"].get("optional") is not True:
            problem(where, f"env {e['name']}: secretKeyRef must be optional: true")
        if e["name"] == LICENCE_ENV and "value" in e:
            problem(where, f"env {LICENCE_ENV} has a literal value: use a secretKeyRef")
    for f in c.get("envFrom", []):
        if "secretRef" in f and f["secretRef"].get("optional") is not True:
            problem(where, "envFrom secretRef must be optional: true")


def check_collector_config(where, text, has_key_secret, services):
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        problem(where, f"collector config is not YAML: {e}")
        return
    if not isinstance(cfg, dict) or "service" not in cfg:
        problem(where, "collector config has no service section")
        return
    defined = {kind: set((cfg.get(kind) or {}).keys()) for kind in ("receivers", "processors", "exporters", "extensions", "connectors")}
    for ext in cfg["service"].get("extensions", []):
        if ext not in defined["extensions"]:
            problem(where, f"service.extensions: {ext} is not defined")
    pipelines = cfg["service"].get("pipelines") or {}
    if not pipelines:
        problem(where, "collector config has no pipelines")
    used = set()
    for pname, p in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for comp in p.get(kind, []):
                used.add((kind, comp))
                if comp not in defined[kind] and comp not in defined["connectors"]:
                    problem(where, f"pipeline {pname}: {kind[:-1]} {comp} is not defined")
        if not p.get("receivers") or not p.get("exporters"):
            problem(where, f"pipeline {pname} needs receivers and exporters")
    for name, exp in (cfg.get("exporters") or {}).items():
        exp = exp or {}
        endpoint = str(exp.get("endpoint", ""))
        if "nr-data.net" in endpoint:
            if not has_key_secret:
                problem(where, f"exporter {name} sends to New Relic, but the build has no fizzbuzz-newrelic Secret")
            if "${env:" + LICENCE_ENV + "}" not in str((exp.get("headers") or {}).get("api-key", "")):
                problem(where, f"exporter {name}: the api-key header must be ${{env:{LICENCE_ENV}}}")
            if ("exporters", name) not in used:
                problem(where, f"exporter {name} is defined but in no pipeline")
        for k in KEY_PATTERNS:
            if k.search(str(exp)):
                problem(where, f"exporter {name} has what looks like a literal New Relic key")
        if endpoint and name.startswith("otlp/"):
            check_service_url(where, f"exporter {name}", "grpc://" + endpoint, services)


def check_service_url(where, what, url, services):
    """A URL to a short (in-namespace) host name must name a Service of the build and one of its ports."""
    parts = urlsplit(url)
    if not parts.hostname or "." in parts.hostname:
        return  # another namespace or outside the cluster: not ours to check
    ports = services.get(parts.hostname)
    if ports is None:
        problem(where, f"{what} {url}: no Service {parts.hostname} in this build")
    elif parts.port not in ports:
        problem(where, f"{what} {url}: Service {parts.hostname} has no port {parts.port}")


def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def check_build(path):
    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    build = Path(path).stem
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}

    if ("Namespace", NAMESPACE) not in names:
        problem(build, f"no Namespace {NAMESPACE}")
    for d in docs:
        where = f"{build}: {d['kind']}/{d['metadata']['name']}"
        labels = d["metadata"].get("labels") or {}
        if d["kind"] not in CLUSTER_SCOPED and d["metadata"].get("namespace") != NAMESPACE:
            problem(where, f"not in namespace {NAMESPACE}")
        if labels.get("app.kubernetes.io/part-of") != "fizzbuzz":
            problem(where, "label app.kubernetes.io/part-of must be fizzbuzz")
        if d["kind"] in ("Deployment", "StatefulSet", "Service"):
            for label in LABELS:
                if label not in labels:
                    problem(where, f"no label {label}")

    configmaps = {d["metadata"]["name"]: d.get("data") or {} for d in by_kind.get("ConfigMap", [])}
    config = configmaps.get("fizzbuzz-config")
    if config is None:
        problem(build, "no ConfigMap fizzbuzz-config")
        config = {}
    for k, v in CONFIG_KEYS.items():
        if config.get(k) != v:
            problem(build, f"fizzbuzz-config {k} must be {v!r}, not {config.get(k)!r}")
    if not config.get("CONSUL_HTTP_ADDR"):
        problem(build, "fizzbuzz-config has no CONSUL_HTTP_ADDR")
    for name, data in configmaps.items():
        if LICENCE_ENV in data:
            problem(build, f"ConfigMap {name} has {LICENCE_ENV}: it belongs in a Secret")

    secrets = by_kind.get("Secret", [])
    for s in secrets:
        values = [base64.b64decode(v).decode() for v in (s.get("data") or {}).values()]
        values += [str(v) for v in (s.get("stringData") or {}).values()]
        if any(v.strip() for v in values):
            problem(f"{build}: Secret/{s['metadata']['name']}", "has a non-empty value: no secret is committed (CI builds with an empty placeholder)")
    has_key_secret = any(s["metadata"]["name"].startswith("fizzbuzz-newrelic") for s in secrets)

    services = {}
    for s in by_kind.get("Service", []):
        services[s["metadata"]["name"]] = {p["port"] for p in s["spec"].get("ports", [])}
    for key in ("CONSUL_HTTP_ADDR", "FIZZBUZZ_OTLP_ENDPOINT"):
        if config.get(key):
            check_service_url(build, f"fizzbuzz-config {key}", config[key], services)

    deployments = by_kind.get("Deployment", [])
    workloads = deployments + by_kind.get("StatefulSet", [])
    nodes = set()
    for dep in workloads:
        name = dep["metadata"]["name"]
        pod = dep["spec"]["template"]["spec"]
        tmpl_labels = dep["spec"]["template"]["metadata"].get("labels") or {}
        if not labels_match(dep["spec"]["selector"].get("matchLabels"), tmpl_labels):
            problem(f"{build}: {dep['kind']}/{name}", "selector does not match the pod template's labels")
        for c in containers(dep):
            where = f"{build}: {dep['kind']}/{name} container {c['name']}"
            if not (c.get("readinessProbe") and c.get("livenessProbe")):
                problem(where, "needs a readinessProbe and a livenessProbe")
            req = (c.get("resources") or {}).get("requests") or {}
            if not (req.get("cpu") and req.get("memory")):
                problem(where, "needs resource requests (cpu and memory)")
            if not ((c.get("resources") or {}).get("limits") or {}).get("memory"):
                problem(where, "needs a memory limit")
            check_secret_refs(where, c)
            for f in c.get("envFrom", []):
                ref = (f.get("configMapRef") or {}).get("name")
                if ref and ref not in configmaps:
                    problem(where, f"envFrom ConfigMap {ref} is not in this build")
            if image_name(c["image"]) == NODE_IMAGE:
                nodes.add(name)
                check_probes(where, c)
                check_security(where, pod, c)
                check_node_env(where, c, config)
                check_node_tls(where, pod, c, {x["metadata"]["name"] for x in secrets})
                if pod.get("terminationGracePeriodSeconds", 30) < 30:
                    problem(where, "terminationGracePeriodSeconds under 30: too short for a graceful leave")
            if c["name"] == "otel-collector":
                uses_key = any(e["name"] == LICENCE_ENV for e in env_list(c))
                for v in pod.get("volumes", []):
                    cm = (v.get("configMap") or {}).get("name")
                    if cm is None:
                        continue
                    if cm not in configmaps:
                        problem(where, f"volume {v['name']}: ConfigMap {cm} is not in this build")
                        continue
                    text = configmaps[cm].get("config.yaml", "")
                    if "${env:" + LICENCE_ENV + "}" in text and not uses_key:
                        problem(where, f"the config reads {LICENCE_ENV} but the container has no such env var")
                    check_collector_config(f"{where} ({cm})", text, has_key_secret, services)
        if name == "client":
            args = " ".join(containers(dep)[0].get("args", []))
            if "--forever" not in args or "--rate 50" not in args:
                problem(f"{build}: Deployment/client", "must run --forever --rate 50")
    if nodes != NODES:
        problem(build, f"node Deployments (image {NODE_IMAGE}) are {sorted(nodes)}, want {sorted(NODES)}")
    replicas = {d["metadata"]["name"]: d["spec"].get("replicas", 1) for d in deployments}
    for name, want in (("fizz", 2), ("buzz", 2), ("client", 1)):
        if name in replicas and replicas[name] != want:
            problem(build, f"Deployment {name} has {replicas[name]} replicas, want {want}")

    pod_labels = [d["spec"]["template"]["metadata"].get("labels") or {} for d in workloads]
    for s in by_kind.get("Service", []):
        sel = s["spec"].get("selector")
        if sel and not any(labels_match(sel, pl) for pl in pod_labels):
            problem(f"{build}: Service/{s['metadata']['name']}", "selector matches no pod template")
    return len(docs)


def check_committed(root):
    """No licence key in the files under deploy/ that git tracks (or all of them, outside git)."""
    deploy = Path(root) / "deploy"
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--", "deploy"],
            check=True, capture_output=True,
        ).stdout.decode()
        files = [Path(root) / f for f in out.split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = [p for p in deploy.rglob("*") if p.is_file()]
    for f in files:
        rel = f.relative_to(root)
        if f.name == "newrelic.env":
            problem(str(rel), "is committed: it holds the licence key (git must ignore it)")
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        for pattern in KEY_PATTERNS:
            if pattern.search(text):
                problem(str(rel), "has what looks like a New Relic key")
        for m in re.finditer(rf"^[ \t]*{LICENCE_ENV}[ \t]*[=:][ \t]*(\S+)", text, re.M):
            value = m.group(1).strip("'\"")
            if value and not value.startswith(("$", "<")):
                problem(str(rel), f"sets {LICENCE_ENV} to a literal value")


def main():
    root, builds = sys.argv[1], sys.argv[2:]
    if not builds:
        sys.exit("check_kubernetes.py: no build given")
    total = 0
    for b in builds:
        try:
            total += check_build(b)
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            problem(Path(b).stem, f"unexpected shape ({type(e).__name__}: {e})")
    check_committed(root)
    if problems:
        for p in problems:
            print(f"FAIL {p}", file=sys.stderr)
        sys.exit(1)
    print(total)


if __name__ == "__main__":
    main()
