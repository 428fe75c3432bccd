#!/usr/bin/env bash
# Validates deploy/kubernetes offline, without a cluster:
#   1. kustomize builds every entry point (deploy/kubernetes and overlays/*),
#   2. kubernetes-validate --strict checks every manifest against the API schemas of
#      Kubernetes $K8S_VERSION (a misspelled or unknown field fails),
#   3. check_kubernetes.py checks what a schema cannot: gRPC health probes on 7071,
#      resource requests, optional Secret references, no committed licence key, the
#      collector's pipelines, Services and ConfigMaps that references point to.
#
# Usage: deploy/ci/check-kubernetes.sh [VENV]   (from anywhere; CI runs it from the
# repo root). VENV: a Python venv to install kubernetes-validate and PyYAML into;
# without it, one is made in a temporary directory.
set -euo pipefail

K8S_VERSION=1.31.0
# Pinned: each release bundles the schemas of a fixed range of Kubernetes versions.
KUBERNETES_VALIDATE=kubernetes-validate==1.37.0

root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${1:-}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

fail() { echo "check-kubernetes: $*" >&2; exit 1; }

# 1. A kustomize: kubectl's built-in one, or a standalone binary.
if command -v kubectl > /dev/null 2>&1 && kubectl kustomize --help > /dev/null 2>&1; then
  kustomize=(kubectl kustomize)
  kustomize_version="$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: //p')"
elif command -v kustomize > /dev/null 2>&1; then
  kustomize=(kustomize build)
  kustomize_version="$(kustomize version 2>/dev/null || true)"
else
  fail "no kustomize: neither 'kubectl' (for 'kubectl kustomize') nor a standalone 'kustomize' is on PATH; install one of them"
fi

# 2. kubernetes-validate and PyYAML in a venv.
command -v python3 > /dev/null 2>&1 || fail "python3 is not on PATH"
if [ -z "$venv" ]; then
  venv="$work/venv"
fi
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" || fail "could not create a Python venv at $venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check "$KUBERNETES_VALIDATE" pyyaml \
  || fail "could not pip install $KUBERNETES_VALIDATE and pyyaml into $venv"
validate="$venv/bin/kubernetes-validate"
[ -x "$validate" ] || fail "kubernetes-validate is not in $venv/bin after pip install"

# Build a copy of the tree: the overlays that generate the New Relic Secret read
# newrelic-secret/newrelic.env, which is never committed. The copy gets an empty
# placeholder, so a real key in a local checkout is never read into the builds.
tree="$work/kubernetes"
cp -R "$root/deploy/kubernetes" "$tree"
find "$tree" -name newrelic.env -exec rm -f {} +
printf 'NEW_RELIC_LICENSE_KEY=\n' > "$tree/newrelic-secret/newrelic.env"
# Likewise the TLS files (fizzbuzz certs makes them): empty placeholders.
find "$tree/tls" -name '*.pem' -exec rm -f {} +
for f in ca.pem member.pem member-key.pem; do : > "$tree/tls/$f"; done

# Every entry point: each directory with a kustomization that is not a Component, but
# the base (part of every build; alone it has no Consul, so it is no entry point).
entries=()
while IFS= read -r k; do
  dir="$(dirname "$k")"
  grep -q '^kind: *Component' "$k" && continue
  [ "$dir" = "$tree/base" ] && continue
  entries+=("${dir#"$tree"}")
done < <(find "$tree" -name kustomization.yaml | sort)
[ "${#entries[@]}" -gt 0 ] || fail "no kustomization.yaml under deploy/kubernetes"

mkdir -p "$work/builds"
builds=()
for e in "${entries[@]}"; do
  name="${e#/}"
  name="${name:-default}"
  out="$work/builds/${name//\//-}.yaml"
  "${kustomize[@]}" "$tree$e" > "$out" 2> "$work/kustomize.err" \
    || { cat "$work/kustomize.err" >&2; fail "kustomize build of deploy/kubernetes$e failed"; }
  [ -s "$out" ] || fail "kustomize build of deploy/kubernetes$e is empty"
  builds+=("$out")
done

# 3. Strict schema validation, each build on its own so a failure names it.
for b in "${builds[@]}"; do
  if ! "$validate" --strict --quiet -k "$K8S_VERSION" "$b" > "$work/validate.out" 2>&1; then
    sed "s|$work/builds/||" "$work/validate.out" >&2
    fail "$(basename "$b" .yaml): not valid for Kubernetes $K8S_VERSION (kubernetes-validate --strict)"
  fi
  if grep -q . "$work/validate.out"; then
    sed "s|$work/builds/||" "$work/validate.out"
  fi
done

# 4. What the schemas cannot check.
if ! manifests="$("$venv/bin/python" "$root/deploy/ci/check_kubernetes.py" "$root" "${builds[@]}")"; then
  fail "the manifests break the checks above (deploy/ci/check_kubernetes.py)"
fi

echo "kustomize: ${kustomize[*]} ${kustomize_version}; builds: $(cd "$work/builds" && ls | sed 's/\.yaml$//' | paste -sd' ' -)"
echo "kubernetes: $manifests manifests in ${#builds[@]} builds, strict-valid (Kubernetes $K8S_VERSION)"
