#!/usr/bin/env bash
# Every TCP, PostgreSQL and HTTP scenario in one sitting, Sluice with its audit
# log on both ways: the peers' gateways (`batched`, from loadtest/peers/) and
# their `strict` twins started here, beside direct, pgbouncer, haproxy and
# nginx from loadtest/peers/start.sh.
#
#   loadtest/peers/start.sh            # once
#   loadtest/every-scenario.sh [SECONDS_PER_ENDPOINT] [ROUNDS]
#
# Run it right after start.sh from the same tree (start.sh builds the peers'
# gateways; this builds the twins). Strict twins: tcp :7011, PostgreSQL :6445 (masked :6446, admin :9475), HTTP
# :7113; their audit logs under /tmp/sluice-every-scenario/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-8}
rounds=${2:-2}
state=/tmp/sluice-every-scenario
peers=/tmp/sluice-peers
[ -f "$peers/dev.key.pem" ] || { echo "run loadtest/peers/start.sh first" >&2; exit 1; }
cargo build --release -q -p sluice -p sluice-loadtest
rm -rf "$state" && mkdir -p "$state"
. loadtest/gateways.sh

# strict CONFIG NAME FROM:TO...   (listen/admin addresses to move)
strict() {
    local cfg=$1 name=$2 out="$state/$2.toml"
    shift 2
    sed -e "s#dir = \"$peers/[a-z-]*\"#dir = \"$state/audit-$name\"#" \
        -e 's#durability = "batched"#durability = "strict"#' "$cfg" >"$out"
    for move in "$@"; do
        sed -i "s#127.0.0.1:${move%%:*}\"#127.0.0.1:${move##*:}\"#" "$out"
    done
    grep -q 'durability = "strict"' "$out" || { echo "$cfg: no batched audit to make strict" >&2; exit 1; }
    gateway "$name" "$out"
}
ports_free 7011 6445 6446 9475 7113
strict loadtest/peers/sluice-tcp.toml tcp 7001:7011
strict loadtest/peers/sluice-pg.toml pg 6435:6445 6436:6446 9471:9475
strict loadtest/peers/sluice-http.toml http 7103:7113
sleep 2
listening 7011 6445 6446 7113

key=(--key "$peers/dev.key.pem")
echo "== tcp-stream (4 connections)"
run tcp-stream --compare direct=127.0.0.1:7000 sluice=127.0.0.1:7001 strict=127.0.0.1:7011 \
    haproxy=127.0.0.1:7002 --connections 4
echo "== tcp-rr (16 connections)"
run tcp-rr --compare direct=127.0.0.1:7000 sluice=127.0.0.1:7001 strict=127.0.0.1:7011 \
    haproxy=127.0.0.1:7002 --connections 16
echo "== pg-select (prepared, 8 connections)"
run pg-select "${key[@]}" --database loadtest --compare direct=127.0.0.1:5432 sluice=127.0.0.1:6435 \
    strict=127.0.0.1:6445 pgbouncer=127.0.0.1:6433 haproxy=127.0.0.1:6434 --connections 8
echo "== pg-select --simple (8 connections)"
run pg-select --simple "${key[@]}" --database loadtest --compare direct=127.0.0.1:5432 \
    sluice=127.0.0.1:6435 strict=127.0.0.1:6445 pgbouncer=127.0.0.1:6433 haproxy=127.0.0.1:6434 \
    --connections 8
echo "== pg-rows (8 connections)"
"$lt" pg-rows "${key[@]}" --database loadtest --setup --compare direct=127.0.0.1:5432 \
    --duration 1s --rounds 1 --connections 1 >"$state/out" 2>"$state/err" \
    || { cat "$state/out" "$state/err" >&2; exit 1; }
run pg-rows "${key[@]}" --database loadtest --compare direct=127.0.0.1:5432 sluice=127.0.0.1:6435 \
    strict=127.0.0.1:6445 masked=127.0.0.1:6436 masked-strict=127.0.0.1:6446 \
    pgbouncer=127.0.0.1:6433 --connections 8
echo "== pg-write (8 connections, every 20th held and approved)"
run pg-write "${key[@]}" --database loadtest --compare direct=127.0.0.1:5432 sluice=127.0.0.1:6435 \
    strict=127.0.0.1:6445 pgbouncer=127.0.0.1:6433 \
    --approver sluice=127.0.0.1:9471 --approver strict=127.0.0.1:9475 --connections 8
echo "== pg-connect (4 connections)"
run pg-connect "${key[@]}" --database loadtest --compare direct=127.0.0.1:5432 sluice=127.0.0.1:6435 \
    strict=127.0.0.1:6445 pgbouncer=127.0.0.1:6433 --connections 4
echo "== http-json (32 connections)"
run http-json "${key[@]}" --compare direct=127.0.0.1:7100 sluice=127.0.0.1:7103 strict=127.0.0.1:7113 \
    nginx=127.0.0.1:7101 haproxy=127.0.0.1:7102 --connections 32
