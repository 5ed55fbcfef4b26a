#!/usr/bin/env bash
# Requests/s and latency for a small JSON response, side by side in one run with
# wrk: direct to the upstream, through Sluice (token check + rules + JSON masking +
# batched audit), through nginx as a reverse proxy, through haproxy in HTTP mode.
# Endpoints alternate (A B C D A B C D ...) so drift hits all alike.
#   loadtest/peers/start.sh && loadtest/peers/http-wrk.sh [ROUNDS] [SECONDS] [CONNECTIONS]
# Two builds side by side: ENDPOINTS="direct=7100 nginx=7101 haproxy=7102 before=7104 after=7105".
# NEW_CONNECTIONS=1: every request on a new connection (`Connection: close`), which
# measures what a session costs to set up.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}; secs=${2:-10}; conns=${3:-32}
state=/tmp/sluice-peers
sluice=${SLUICE:-./target/release/sluice}
token=$("$sluice" token mint --key "$state/dev.key.pem" --sub bench --groups agents \
    --iss https://idp.sluice.test/ --ttl 1h)
extra=()
if [ "${NEW_CONNECTIONS:-}" = 1 ]; then extra=(-H "Connection: close"); fi
declare -A rps lat port
names=()
for e in ${ENDPOINTS:-direct=7100 sluice=7103 nginx=7101 haproxy=7102}; do
    names+=("${e%%=*}")
    port[${e%%=*}]=${e#*=}
done
for r in $(seq "$rounds"); do
    for n in "${names[@]}"; do
        out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency -H "Authorization: Bearer $token" "${extra[@]}" \
            "http://127.0.0.1:${port[$n]}/v1/customers")
        rps[$n]+="$(awk '/Requests\/sec/ {print $2}' <<<"$out") "
        lat[$n]+="$(awk '$1 == "99%" {print $2}' <<<"$out") "
        if grep -q "Non-2xx" <<<"$out"; then echo "$n: non-2xx responses!" >&2; fi
    done
done
printf "%-8s %-28s %s\n" endpoint "requests/s (per round)" "p99 (per round)"
for n in "${names[@]}"; do
    printf "%-8s %-28s %s\n" "$n" "${rps[$n]}" "${lat[$n]}"
done
