"""Checks the grain dev agent with py-consul, a Consul client nobody here wrote.

Usage: python py_consul_check.py http://127.0.0.1:PORT TOKEN
(the agent must require TOKEN). Exits non-zero with a message on the first failure.
"""

import sys
import threading
import time
import urllib.parse

import consul


def main() -> None:
    url = urllib.parse.urlparse(sys.argv[1])
    token = sys.argv[2]
    c = consul.Consul(host=url.hostname, port=url.port, token=token)
    anonymous = consul.Consul(host=url.hostname, port=url.port)
    checks = 0

    def ok(cond, what):
        nonlocal checks
        if not cond:
            sys.exit(f"FAILED: {what}")
        checks += 1
        print(f"ok {checks} - {what}")

    # ACL: without the token, the agent refuses (as Consul does with 403).
    try:
        anonymous.agent.services()
        ok(False, "a request without the ACL token is refused")
    except consul.ACLPermissionDenied:
        ok(True, "a request without the ACL token is refused")

    # Register with a TTL check: critical (so not passing) until the check passes.
    ok(c.agent.service.register("pycheck", service_id="py-1", address="127.0.0.1", port=7001,
                                tags=["FizzService"], check=consul.Check.ttl("2s")),
       "register a service with a TTL check")
    ok("py-1" in c.agent.services(), "the service is in /v1/agent/services")
    ok("pycheck" in c.catalog.services()[1], "the service is in /v1/catalog/services")
    index, passing = c.health.service("pycheck", passing=True)
    ok(passing == [], f"excluded from passing before its check passes (got {len(passing)})")
    _, anyhealth = c.health.service("pycheck")
    ok(len(anyhealth) == 1 and anyhealth[0]["Service"]["ID"] == "py-1",
       "listed without the passing filter, Consul-shaped (Node/Service/Checks)")
    statuses = {chk["CheckID"]: chk["Status"] for chk in anyhealth[0]["Checks"]}
    ok(statuses.get("service:py-1") == "critical", f"the TTL check starts critical ({statuses})")
    ok(int(index) >= 1, f"X-Consul-Index is at least 1 ({index})")

    # A blocking query returns early when the check passes.
    threading.Timer(0.5, lambda: c.agent.check.ttl_pass("service:py-1")).start()
    started = time.monotonic()
    new_index, passing = c.health.service("pycheck", passing=True, index=index, wait="10s")
    took = time.monotonic() - started
    ok(len(passing) == 1, "the service is passing after its check passed")
    ok(took < 3.0, f"the blocking query returned early on the change ({took:.2f}s of a 10s wait)")
    ok(int(new_index) > int(index), f"the index moved forward ({index} -> {new_index})")

    # A blocking query with no change waits (about) its wait time.
    started = time.monotonic()
    same_index, _ = c.health.service("pycheck", passing=True, index=new_index, wait="1s")
    took = time.monotonic() - started
    ok(0.9 <= took <= 2.5, f"a blocking query with no change waits its 1s ({took:.2f}s)")
    ok(same_index == new_index, "the index is unchanged when nothing changed")

    # TTL expiry drops it from passing within TTL + 1s of the last pass.
    c.agent.check.ttl_pass("service:py-1")
    last_pass = time.monotonic()
    while True:
        _, passing = c.health.service("pycheck", passing=True)
        waited = time.monotonic() - last_pass
        if not passing:
            break
        if waited > 3.0:
            ok(False, "TTL expiry drops the service from passing within 3s")
        time.sleep(0.05)
    ok(1.9 <= waited <= 3.0, f"TTL expiry dropped it after {waited:.2f}s (TTL 2s)")
    _, anyhealth = c.health.service("pycheck")
    out = [chk for chk in anyhealth[0]["Checks"] if chk["CheckID"] == "service:py-1"][0]
    ok(out["Status"] == "critical" and "TTL expired" in out["Output"], "the check says TTL expired")

    # Deregister.
    ok(c.agent.service.deregister("py-1"), "deregister")
    ok("py-1" not in c.agent.services(), "gone from /v1/agent/services")
    _, anyhealth = c.health.service("pycheck")
    ok(anyhealth == [], "gone from /v1/health/service")
    ok(c.agent.check.ttl_pass("service:py-1") is False,
       "passing a check of a deregistered service fails (404)")

    ok(c.status.leader() != "", "status/leader answers")
    print(f"{checks} passed, 0 failed")


if __name__ == "__main__":
    main()
