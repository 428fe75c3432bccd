#!/usr/bin/env bash
# What recording telemetry costs, in instructions per number over the whole cluster:
# `fizzbuzz up` under callgrind (every process) with no telemetry (off), with metrics
# recorded (on: exported only at exit), and with metrics and traces sampled at 1 %
# (tr: parent-based trace-id ratio, spans exported over OTLP/HTTP), each at two counts
# so that start-up cancels out. Instructions are stable where throughput on a shared
# machine is not.
#
#   scripts/metrics-cost.sh [path/to/fizzbuzz]   # default: target/release/fizzbuzz
#
# Needs valgrind (Debian: apt-get install valgrind) and python3; takes about 2 minutes.
set -euo pipefail
bin="${1:-target/release/fizzbuzz}"
[ -x "$bin" ] || { echo "metrics-cost: no executable at $bin (cargo build --release --bin fizzbuzz)" >&2; exit 64; }
command -v valgrind > /dev/null || { echo "metrics-cost: valgrind is not installed" >&2; exit 69; }
work="$(mktemp -d)"
sink_pid=""
cleanup() { [ -n "$sink_pid" ] && kill "$sink_pid" 2> /dev/null; rm -rf "$work"; }
trap cleanup EXIT

# An OTLP/HTTP sink that accepts everything, on a free loopback port.
cat > "$work/sink.py" <<'PY'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
open(sys.argv[1], "w").write(str(s.server_address[1]))
s.serve_forever()
PY
python3 "$work/sink.py" "$work/port" & sink_pid=$!
for _ in $(seq 50); do [ -s "$work/port" ] && break; sleep 0.1; done
[ -s "$work/port" ] || { echo "metrics-cost: the sink did not start" >&2; exit 1; }
endpoint="http://127.0.0.1:$(cat "$work/port")"

run() { # mode count
  local out="$work/$1-$2" extra=()
  mkdir -p "$out"
  [ "$1" != off ] && extra=(--otlp-endpoint "$endpoint" --metrics-interval 3600s)
  local traces=none
  [ "$1" = tr ] && traces=otlp
  OTEL_TRACES_EXPORTER="$traces" OTEL_TRACES_SAMPLER=parentbased_traceidratio \
    OTEL_TRACES_SAMPLER_ARG=0.01 OTEL_LOGS_EXPORTER=none valgrind --tool=callgrind \
    --trace-children=yes --callgrind-out-file="$out/cg.%p" \
    "$bin" up --count "$2" "${extra[@]}" > /dev/null 2> "$out/stderr" \
    || { echo "metrics-cost: fizzbuzz up ($1, $2) failed:" >&2; tail -5 "$out/stderr" >&2; exit 1; }
  for f in "$out"/cg.*; do
    # `cmd: <path> [args]` and `summary: <instructions>` head each profile; a node is
    # its own binary (`fizz`, `buzz`, `client`) or `fizzbuzz <role>` when only that
    # one was built.
    echo "$1 $2 $(grep -m1 '^cmd:' "$f" | awk '{n = split($2, p, "/"); print (p[n] == "fizzbuzz" ? $3 : p[n])}') $(grep -m1 '^summary:' "$f" | awk '{print $2}')"
  done
}
for mode in off on tr; do for n in 20000 60000; do run "$mode" "$n"; done; done > "$work/totals"
python3 - "$work/totals" <<'PY'
import collections, sys
ir = collections.defaultdict(int)
for line in open(sys.argv[1]):
    mode, n, role, count = line.split()
    ir[(mode, int(n), role)] += int(count)
per = {}
for mode in ("off", "on", "tr"):
    roles = {r: (ir[(mode, 60000, r)] - ir[(mode, 20000, r)]) / 40000 for r in ("client", "fizz", "buzz")}
    per[mode] = sum(roles.values())
    print(f"{ {'off': 'no telemetry', 'on': 'metrics', 'tr': 'traced at 1 %'}[mode]:13}: {per[mode]:8.0f} instructions a number  "
          + "  ".join(f"{r} {v:.0f}" for r, v in roles.items()))
print(f"recording metrics costs {100 * (per['on'] / per['off'] - 1):.1f} % more instructions a number")
print(f"tracing costs {100 * (per['tr'] / per['on'] - 1):.1f} % more instructions a number than metrics")
PY
