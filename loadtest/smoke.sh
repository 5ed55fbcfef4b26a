#!/usr/bin/env bash
# The CI smoke of the regression gate: a few seconds per scenario against
# throw-away upstreams (the loadtest's own echo and JSON servers), Sluice
# measured side by side with direct, compared with the committed smoke baseline
# under a loose limit, so a change that halves throughput or doubles CPU per
# operation cannot land. The full runs are in loadtest/README.md.
#
#   loadtest/smoke.sh                      # build (profile `smoke`), run, gate
#   loadtest/smoke.sh --record             # measure and write the baseline instead
#   SMOKE_FEATURES=sluice/bench-slowdown loadtest/smoke.sh   # a deliberately slowed build
set -euo pipefail
cd "$(dirname "$0")/.."
limit=${SMOKE_LIMIT:-50%}
record=${1:-}
features=${SMOKE_FEATURES:-}
cargo build -q --profile smoke -p sluice -p sluice-loadtest ${features:+--features "$features"}
bin=target/smoke
state=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$state"; }
trap cleanup EXIT

# Four distinct ports nothing listens on, below the kernel's ephemeral range (a
# port an outgoing connection holds there cannot be bound even though nothing
# listens on it). bash's /dev/tcp checks for a listener: no other tool needed.
low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
ports=()
while ((${#ports[@]} < 4)); do
    p=$((10000 + RANDOM % (low - 10000)))
    [[ " ${ports[*]} " == *" $p "* ]] && continue
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
    ports+=("$p")
done
echo_port=${ports[0]}; up_port=${ports[1]}; tcp_port=${ports[2]}; http_port=${ports[3]}
"$bin/sluice" token keygen --out "$state" >/dev/null
"$bin/sluice-loadtest" echo --listen "127.0.0.1:$echo_port" 2>/dev/null & pids+=($!)
"$bin/sluice-loadtest" http-upstream --listen "127.0.0.1:$up_port" 2>/dev/null & pids+=($!)
cat >"$state/sluice.toml" <<TOML
[gateway]
shards = 2
drain_timeout = "1s"
[identity]
issuer = "https://idp.sluice.test/"
audience = "sluice"
jwks = "file:$state/dev.jwks.json"
[audit]
dir = "$state/audit"
durability = "batched"
[[target]]
name = "tcp"
protocol = "tcp"
listen = "127.0.0.1:$tcp_port"
upstream = "127.0.0.1:$echo_port"
access = ["*"]
[[target]]
name = "api"
protocol = "http"
listen = "127.0.0.1:$http_port"
upstream = "127.0.0.1:$up_port"
access = ["agents"]
credentials = { header = "Authorization", value_env = "SMOKE_API_KEY" }
masking = "pii"
[masking.pii]
detectors = ["email", "credit_card", "ssn", "phone", "aws_key", "jwt", "api_key"]
fields = { "\$.customers[*].card" = "last4" }
TOML
SMOKE_API_KEY="Bearer smoke" SLUICE_LOG=warn "$bin/sluice" serve --config "$state/sluice.toml" & pids+=($!)
up=
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$http_port") 2>/dev/null && { up=1; break; }
    sleep 0.1
done
[ -n "$up" ] || { echo "smoke: the gateway did not start (see its log above)" >&2; exit 1; }

status=0
for scenario in tcp-rr http-json; do
    case $scenario in
        tcp-rr) direct=$echo_port; via=$tcp_port; extra=() ;;
        http-json) direct=$up_port; via=$http_port; extra=(--key "$state/dev.key.pem") ;;
    esac
    baseline=loadtest/baselines/smoke-$scenario.json
    args=("$scenario" --compare "direct=127.0.0.1:$direct" "sluice=127.0.0.1:$via"
        --duration 6s --rounds 3 --connections 4 "${extra[@]}")
    if [ "$record" = --record ]; then
        "$bin/sluice-loadtest" "${args[@]}" --record "$baseline"
    else
        "$bin/sluice-loadtest" "${args[@]}" --gate "$baseline" --max-regression "$limit" || status=1
    fi
done
exit $status
