"""Starts the compose stack with CI's stand-ins and checks it, for real.

Usage: python3 deploy/ci/check_stack.py   (from the repository root; the images
fizzbuzz-grains:0.1.0 and local/rotel:* must exist: deploy/ci/check-stack.sh makes
them)

Checks, in order, each waiting for its event with a deadline (no fixed sleeps):
1. every node's readiness (grpc.health.v1, service "") says SERVING;
2. the Consul stand-in lists two fizz and two buzz members as passing;
3. a fixed-count client run prints the canonical FizzBuzz;
4. metrics from fizz, buzz and client reached the collector stand-in;
5. a fixed-count client run across a `docker kill` of one fizz container exits 0 with
   the canonical output;
6. a draining node's readiness says NOT_SERVING (a Watch open on it sees SERVING,
   then NOT_SERVING after SIGTERM) and the node exits 0;
7. `docker-compose down` leaves no container and no network of the project.
Exits non-zero with a message naming the first check that failed.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

PROJECT = os.environ.get("STACK_PROJECT", "fizzbuzz-ci")
FILES = ["deploy/docker-compose.yml", "deploy/ci/docker-compose.ci.yml"]
NODES = ["fizz-1", "fizz-2", "buzz-1", "buzz-2", "client"]
SERVICES = ["consul", *NODES, "otel-collector"]
CLUSTER = "fizzbuzz-cluster"


def compose(*args: str) -> list[str]:
    cmd = ["docker-compose", "-p", PROJECT]
    for f in FILES:
        cmd += ["-f", f]
    return cmd + list(args)


def run(cmd: list[str], timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        fail(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()[-2000:]}")
    return p


# Processes this script started and has not reaped: killed on a failure.
CHILDREN: list[subprocess.Popen] = []


def spawn(cmd: list[str], **kwargs) -> subprocess.Popen:
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, text=True, **kwargs)
    CHILDREN.append(p)
    return p


def fail(message: str) -> None:
    for p in CHILDREN:
        if p.poll() is None:
            p.kill()
    print(f"check-stack: FAILED: {message}", file=sys.stderr)
    for service in SERVICES:
        logs = subprocess.run(compose("logs", "--no-color", "--tail", "15", service),
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        print(f"--- last logs of {service}:\n{logs.stdout[-3000:]}", file=sys.stderr)
    sys.exit(1)


def wait_for(what: str, probe, deadline_s: float, every_s: float = 0.5):
    """Calls probe() until it returns something true, or fails naming `what`."""
    deadline = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < deadline:
        try:
            got = probe()
        except Exception as e:  # a probe that cannot run yet is retried
            got, last = None, e
        if got:
            return got
        time.sleep(every_s)
    fail(f"{what} within {deadline_s:.0f} s (last: {last})")


def reference(n: int) -> list[str]:
    return ["FizzBuzz" if i % 15 == 0 else "Fizz" if i % 3 == 0 else "Buzz" if i % 5 == 0 else str(i)
            for i in range(1, n + 1)]


def container(service: str) -> str:
    cid = run(compose("ps", "-q", service)).stdout.strip()
    if not cid:
        fail(f"no container for {service}")
    return cid


def ip_of(service: str) -> str:
    fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
    ips = run(["docker", "inspect", "-f", fmt, container(service)]).stdout.split()
    if not ips:
        fail(f"{service} has no address")
    return ips[0]


def readiness(service: str, target: str = "127.0.0.1:7071") -> str:
    p = run(compose("exec", "-T", service, "fizzbuzz", "health", "--addr", target), check=False, timeout=30)
    return p.stdout.strip()


def client_once(name: str, *args: str) -> list[str]:
    """A one-off client container (its own name, so its advertised address is its own)."""
    return compose("run", "--rm", "-T", "--no-deps", "--name", name,
                   "-e", f"FIZZBUZZ_ADVERTISE={name}:7070", "-e", "FIZZBUZZ_LOG_FORMAT=human",
                   "-e", "FIZZBUZZ_LOG=warn",
                   "client", "client", *args)


def main() -> None:
    started = time.monotonic()
    run(compose("up", "-d", "--no-build", *SERVICES), timeout=300)

    # 1. Readiness of every node.
    for node in NODES:
        wait_for(f"{node}'s readiness SERVING", lambda n=node: readiness(n) == "SERVING", 120)
    print(f"check-stack: readiness SERVING on {', '.join(NODES)} "
          f"({time.monotonic() - started:.1f} s after up)")

    # 2. Consul: two fizz and two buzz passing.
    consul = f"http://{ip_of('consul')}:8500/v1/health/service/{CLUSTER}?passing"

    def roles():
        with urllib.request.urlopen(consul, timeout=5) as r:
            entries = json.load(r)
        found = {}
        for e in entries:
            role = ((e.get("Service") or {}).get("Meta") or {}).get("role", "?")
            found[role] = found.get(role, 0) + 1
        return found if found.get("fizz") == 2 and found.get("buzz") == 2 else None

    found = wait_for("two fizz and two buzz passing in Consul", roles, 60)
    print(f"check-stack: Consul lists as passing: {found}")

    # 3. A fixed count prints the canonical FizzBuzz.
    p = run(client_once("fizzbuzz-ci-once", "--count", "100", "--identities", "16"), timeout=180)
    if p.stdout.splitlines() != reference(100):
        fail(f"the client printed {len(p.stdout.splitlines())} lines, not the canonical 1..100:\n{p.stdout[:500]}")
    print("check-stack: a client run of 100 printed the canonical FizzBuzz")

    # 4. Metrics of all three services reached the collector stand-in.
    # rotel's debug log prints each batch's Resource: `-> service.name: Str(fizz)`.
    def services_seen():
        logs = run(compose("logs", "--no-color", "otel-collector"), timeout=60).stdout
        seen = set(re.findall(r"-> service\.name: Str\((fizz|buzz|client)\)", logs))
        addresses = set(re.findall(r"-> grain\.member\.address: Str\(([^)]*)\)", logs))
        if seen >= {"fizz", "buzz", "client"} and addresses >= {f"{n}:7070" for n in NODES}:
            return seen, addresses
        return None

    seen, addresses = wait_for("metrics of fizz, buzz and client (every node) at the collector",
                               services_seen, 60, every_s=2)
    print(f"check-stack: the collector received metrics from {sorted(seen)}, "
          f"with the advertised addresses {sorted(addresses)} on their Resources")

    # 5. A fixed-count run across a docker kill of one fizz.
    count = 3000
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        client = spawn(
            client_once("fizzbuzz-ci-kill", "--count", str(count), "--rate", "300",
                        "--identities", "64", "--call-timeout", "15s"),
            stdout=out, stderr=err)

        def lines_so_far():
            out.flush()
            with open(f"/proc/self/fd/{out.fileno()}") as f:
                return sum(1 for _ in f)

        wait_for("the client's first 300 numbers", lambda: lines_so_far() >= 300, 120, every_s=0.1)
        victim = container("fizz-1")
        before = lines_so_far()
        run(["docker", "kill", victim])
        print(f"check-stack: docker kill fizz-1 after {before} of {count} numbers")
        try:
            rc = client.wait(timeout=180)
        except subprocess.TimeoutExpired:
            client.kill()
            fail("the client did not finish within 180 s of the kill")
        out.seek(0)
        err.seek(0)
        got, report = out.read().splitlines(), err.read()
        if rc != 0:
            fail(f"the client exited {rc} across the kill:\n{report[-2000:]}")
        if got != reference(count):
            fail(f"across the kill the client printed {len(got)} lines, not the canonical 1..{count}")
        summary = " ".join(l.strip() for l in report.splitlines() if re.match(r"\s*(retried|longest stall|numbers)", l))
        print(f"check-stack: across the kill the client exited 0 with the canonical 1..{count} ({summary})")

    # 6. A draining node says NOT_SERVING, then leaves cleanly.
    watch = spawn(
        compose("exec", "-T", "client", "fizzbuzz", "health", "--watch", "--addr", "fizz-2:7071"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # The first line has 30 s to come: the watch is killed after that.
    deadline = threading.Timer(30, watch.kill)
    deadline.start()
    first = watch.stdout.readline().strip() if watch.stdout else ""
    deadline.cancel()
    if first != "SERVING":
        fail(f"the watch on fizz-2 first said {first!r}, not SERVING")
    draining = container("fizz-2")
    # docker stop: SIGTERM (through the container's init), up to 30 s to leave, and no
    # restart by the restart policy afterwards.
    stopper = spawn(["docker", "stop", "--time", "30", draining], stdout=subprocess.DEVNULL)
    try:
        rest, _ = watch.communicate(timeout=60)
        stopper.wait(timeout=60)
    except subprocess.TimeoutExpired:
        watch.kill()
        stopper.kill()
        fail("fizz-2 did not stop within 60 s of SIGTERM")
    statuses = [first, *rest.split()]
    if "NOT_SERVING" not in statuses:
        fail(f"fizz-2's readiness never said NOT_SERVING while it drained: {statuses}")
    code = run(["docker", "inspect", "-f", "{{.State.ExitCode}}", draining]).stdout.strip()
    if code != "0":
        fail(f"fizz-2 exited {code} after SIGTERM, not 0")
    print(f"check-stack: fizz-2 on SIGTERM: readiness {' -> '.join(statuses)}, exit 0")

    # 7. down leaves nothing.
    run(compose("down", "--volumes", "--remove-orphans", "--timeout", "30"), timeout=180)
    label = f"label=com.docker.compose.project={PROJECT}"
    left = run(["docker", "ps", "-a", "-q", "--filter", label]).stdout.split()
    nets = run(["docker", "network", "ls", "-q", "--filter", label]).stdout.split()
    if left or nets:
        fail(f"docker-compose down left {len(left)} containers and {len(nets)} networks")
    print(f"check-stack: down left no container and no network; all checks passed "
          f"in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
