#!/usr/bin/env bash
# Builds deploy/Dockerfile for real from base images made here (no registry), then
# starts the compose stack with CI's stand-ins and checks it (check_stack.py). Run from
# anywhere; .ci/run calls it. The stack is taken down however this ends.
set -euo pipefail
cd "$(dirname "$0")/../.."

project="${STACK_PROJECT:-fizzbuzz-ci}"
image="fizzbuzz-grains:0.1.0"
compose=(docker-compose -p "$project" -f deploy/docker-compose.yml -f deploy/ci/docker-compose.ci.yml)

# Base images, then the image itself: every stage, with the classic builder.
args_line="$(bash deploy/ci/base-images.sh | tail -n 1)"  # fails the script if it fails
read -r -a build_args <<< "$args_line"
started=$SECONDS
DOCKER_BUILDKIT=0 docker build --quiet "${build_args[@]}" -f deploy/Dockerfile -t "$image" . > /dev/null
echo "check-stack: built $image from deploy/Dockerfile in $((SECONDS - started)) s ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}'))"
# The build stages' images (3 GB) are only cache: CI machines may have little disk.
if [ "${CI:-}" = true ]; then docker image prune --force > /dev/null; fi

# What the runtime stage promises: a non-root user, CA certificates, every binary.
uid="$(docker run --rm --entrypoint id "$image" -u)"
[ "$uid" != 0 ] || { echo "check-stack: the image runs as root"; exit 1; }
docker run --rm --entrypoint sh "$image" -c \
  'test -s /etc/ssl/certs/ca-certificates.crt && for b in fizz buzz client fizzbuzz; do "$b" --version > /dev/null || exit 1; done' \
  || { echo "check-stack: the image lacks CA certificates or a binary"; exit 1; }
echo "check-stack: the image runs as uid $uid, has CA certificates and fizz, buzz, client, fizzbuzz"

down() { "${compose[@]}" down --volumes --remove-orphans --timeout 10 > /dev/null 2>&1 || true; }
down  # a stack left over by an interrupted run
trap down EXIT
STACK_PROJECT="$project" python3 deploy/ci/check_stack.py
