# CI's stand-in for the official rust image (rust:<version>-bookworm), which cannot be
# pulled here: Debian bookworm made locally, the C toolchain the official image has,
# the host's own Rust toolchain copied in (rust/ in the build context: its sysroot),
# and the host's extra CA certificates (ca/: what its egress proxy to crates.io needs).
# Made by deploy/ci/base-images.sh.
ARG BASE_IMAGE=local/debian:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
         ca-certificates gcc g++ libc6-dev make pkg-config \
    && rm -rf /var/lib/apt/lists/*
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates > /dev/null
COPY rust/ /usr/local/rust/
ENV CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN mkdir -p /usr/local/cargo/bin && cargo --version && rustc --version
