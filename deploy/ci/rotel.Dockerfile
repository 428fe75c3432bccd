# CI's stand-in for the OpenTelemetry Collector (contrib), which cannot be pulled here:
# rotel, a real OTLP collector, from PyPI, on Debian bookworm made locally. It receives
# OTLP/HTTP on 4318 as the collector does and logs what it receives
# (deploy/ci/docker-compose.ci.yml). The build context holds the host's extra CA
# certificates (ca/: what its egress proxy to PyPI needs). Made by
# deploy/ci/base-images.sh.
ARG BASE_IMAGE=local/debian:bookworm
FROM ${BASE_IMAGE}
ARG ROTEL_VERSION=0.0.1a15
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv libpython3.11 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates > /dev/null \
    && python3 -m venv /opt/rotel \
    && /opt/rotel/bin/pip install --no-cache-dir --disable-pip-version-check "rotel==${ROTEL_VERSION}" \
    && ln -s "$(/opt/rotel/bin/python -c 'import os, rotel; print(os.path.dirname(rotel.__file__))')/rotel-agent" \
         /usr/local/bin/rotel-agent \
    && rotel-agent --version
USER 10001:10001
ENTRYPOINT ["rotel-agent", "start"]
