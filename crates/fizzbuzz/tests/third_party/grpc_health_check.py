"""Checks a fizz node's health service with grpcio-health-checking, the gRPC
project's own health client (nobody here wrote it).

Usage: python grpc_health_check.py FIZZ_BINARY CONSUL_ADDR
(CONSUL_HTTP_TOKEN in the environment if the agent wants one). Starts the node with
--health-bind on a free loopback port, checks readiness ("") and liveness
("liveness"), an unknown service, and NOT_SERVING on SIGTERM; exits non-zero with a
message on the first failure.
"""

import signal
import socket
import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    fizz, consul = sys.argv[1], sys.argv[2]
    port = free_port()
    node = subprocess.Popen(
        [fizz, "--consul-addr", consul, "--health-bind", f"127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    checks = 0

    def ok(cond, what):
        nonlocal checks
        if not cond:
            node.kill()
            sys.exit(f"FAILED: {what}")
        checks += 1
        print(f"ok {checks} - {what}")

    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    serving = health_pb2.HealthCheckResponse.SERVING

    def status(service):
        try:
            return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status
        except grpc.RpcError as e:
            return e.code()

    deadline = time.monotonic() + 20
    while status("") != serving and time.monotonic() < deadline:
        time.sleep(0.1)
    ok(status("") == serving, "readiness is SERVING once the node is registered")
    ok(status("liveness") == serving, "liveness is SERVING")
    ok(status("no.such.Service") == grpc.StatusCode.NOT_FOUND, "an unknown service is NOT_FOUND")

    updates = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=20)
    ok(next(updates).status == serving, "Watch starts with SERVING")
    node.send_signal(signal.SIGTERM)
    ok(
        next(updates).status == health_pb2.HealthCheckResponse.NOT_SERVING,
        "Watch says NOT_SERVING when the node drains",
    )
    ok(node.wait(timeout=20) == 0, "the node exits 0 after SIGTERM")
    print(f"grpc_health_check: {checks} checks passed")


main()
