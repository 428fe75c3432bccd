#!/usr/bin/env bash
# Makes, without a registry, the base images deploy/Dockerfile and the CI stack need:
#   local/debian:bookworm        Debian bookworm (minbase) from Debian's mirror, by mmdebstrap
#   local/rust:<host version>    that, plus gcc and the host's Rust toolchain
#   local/rotel:<version>        that, plus rotel (PyPI): the collector's stand-in
# Prints the build arguments for deploy/Dockerfile on its last line. Idempotent: an image
# already present is kept (FORCE=1 remakes them).
set -euo pipefail
cd "$(dirname "$0")/../.."

mirror="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1 || true)"
mirror="${DEBIAN_MIRROR:-${mirror:-http://deb.debian.org/debian}}"
rust_version="$(rustc --version | awk '{print $2}')"
rotel_version="0.0.1a15"

have() { [ "${FORCE:-0}" != 1 ] && docker image inspect "$1" > /dev/null 2>&1; }

# The build contexts: the host's extra CA certificates (the machines reach crates.io
# and PyPI through an egress proxy that only they trust), and the Rust sysroot.
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/ca"
cp /usr/local/share/ca-certificates/*.crt "$ctx/ca/" 2>/dev/null || true

if ! have local/debian:bookworm; then
  if ! command -v mmdebstrap > /dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap > /dev/null
  fi
  echo "making local/debian:bookworm from $mirror" >&2
  mmdebstrap --quiet --variant=minbase bookworm - "$mirror" \
    | docker import --change 'CMD ["bash"]' - local/debian:bookworm > /dev/null
fi

if ! have "local/rust:$rust_version-bookworm"; then
  sysroot="$(rustc --print sysroot)"
  echo "making local/rust:$rust_version-bookworm from $sysroot" >&2
  cp -al "$sysroot" "$ctx/rust" 2> /dev/null || cp -a "$sysroot" "$ctx/rust"
  rm -rf "$ctx/rust/share/doc"  # 800 MB of HTML that a build never reads
  DOCKER_BUILDKIT=0 docker build --quiet -t "local/rust:$rust_version-bookworm" \
    -f deploy/ci/rust.Dockerfile "$ctx" > /dev/null
  rm -rf "$ctx/rust"
fi

if ! have "local/rotel:$rotel_version"; then
  echo "making local/rotel:$rotel_version" >&2
  DOCKER_BUILDKIT=0 docker build --quiet -t "local/rotel:$rotel_version" \
    --build-arg "ROTEL_VERSION=$rotel_version" -f deploy/ci/rotel.Dockerfile "$ctx" > /dev/null
fi

echo "--build-arg RUST_IMAGE=local/rust:$rust_version-bookworm --build-arg RUNTIME_IMAGE=local/debian:bookworm"
