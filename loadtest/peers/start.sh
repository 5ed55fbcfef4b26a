#!/usr/bin/env bash
# Installs (Debian, as root) and starts the peers the load tests compare Sluice with,
# all on loopback, next to a PostgreSQL on 127.0.0.1:5432 with trust auth:
#   haproxy TCP  :7002 -> echo :7000       (tcp-* scenarios)
#   pgbouncer    :6433 -> PostgreSQL :5432  (session mode)
#   haproxy TCP  :6434 -> PostgreSQL :5432
#   sluice       :6435 -> PostgreSQL :5432, :6436 the same with masking (and :7001 -> echo :7000)
#   haproxy TCP  :6440 -> two sluice instances sharing approvals through the
#                         `sluice_state` database: gw-a :6441 (admin :9481) and
#                         gw-b :6442 (admin :9482), each -> PostgreSQL :5432
#   nginx        :7100 JSON upstream; :7101 nginx reverse proxy -> :7100   (http)
#   haproxy HTTP :7102 -> :7100;  sluice http :7103 -> :7100               (http)
# Stop everything with: loadtest/peers/start.sh stop
set -euo pipefail
cd "$(dirname "$0")/../.."
state=/tmp/sluice-peers
mkdir -p "$state"

if [ "${1:-}" = stop ]; then
    pkill -f "haproxy -f loadtest/peers" || true
    [ -f "$state/nginx/nginx.pid" ] && kill "$(cat "$state/nginx/nginx.pid")" 2>/dev/null || true
    [ -f "$state/pgbouncer.pid" ] && kill "$(cat "$state/pgbouncer.pid")" 2>/dev/null || true
    pkill -f "sluice serve --config loadtest/peers" || true
    pkill -f "sluice-loadtest echo" || true
    rm -f "$state"/sluice-pg-[ab].pid "$state/haproxy-pair.pid"
    exit 0
fi

need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v pgbouncer >/dev/null || need+=(pgbouncer)
command -v pgbench >/dev/null || need+=(postgresql-client postgresql)
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
if ((${#need[@]})); then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

cargo build --release -q -p sluice -p sluice-loadtest
[ -f "$state/dev.key.pem" ] || ./target/release/sluice token keygen --out "$state" >/dev/null
psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'loadtest'" | grep -q 1 \
    || { createdb -h 127.0.0.1 -U postgres loadtest && pgbench -h 127.0.0.1 -U postgres -i -s 1 -q loadtest; }
# The pair's shared state (the instances create their tables in it). For a
# fresh store: loadtest/peers/start.sh stop; dropdb -h 127.0.0.1 -U postgres sluice_state
psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'sluice_state'" | grep -q 1 \
    || createdb -h 127.0.0.1 -U postgres sluice_state

# Each server runs in its own session, as the daemons below do (and as a
# service manager would start it). With the kernel's autogroup scheduling a
# process that shares the load generator's session also shares its CPU share:
# started that way, Sluice was squeezed together with 32+ load-generator
# threads while PostgreSQL's backends sat runnable but unscheduled for 1-18 s
# (seen in /proc/PID/schedstat and the backends' unread socket queues), which
# the load test reported as operations stalled behind Sluice.
daemon() { setsid "$@" </dev/null & }
daemon ./target/release/sluice-loadtest echo --listen 127.0.0.1:7000 >"$state/echo.log" 2>&1
daemon ./target/release/sluice serve --config loadtest/peers/sluice-tcp.toml >"$state/sluice-tcp.log" 2>&1
daemon ./target/release/sluice serve --config loadtest/peers/sluice-pg.toml >"$state/sluice-pg.log" 2>&1
for i in a b; do
    daemon ./target/release/sluice serve --config "loadtest/peers/sluice-pg-$i.toml" >"$state/sluice-pg-$i.log" 2>&1
    echo $! >"$state/sluice-pg-$i.pid"   # setsid runs it in place: this is sluice's own pid
done
API_TOKEN="Bearer upstream-key" daemon ./target/release/sluice serve --config loadtest/peers/sluice-http.toml >"$state/sluice-http.log" 2>&1
mkdir -p "$state/nginx"
nginx -p "$state/nginx" -c "$PWD/loadtest/peers/nginx-http.conf"
haproxy -f loadtest/peers/haproxy-http.cfg -D
haproxy -f loadtest/peers/haproxy-tcp.cfg -D
haproxy -f loadtest/peers/haproxy-pg.cfg -D
haproxy -f loadtest/peers/haproxy-pair.cfg -D -p "$state/haproxy-pair.pid"
# pgbouncer refuses to run as root unless told which user to become.
if [ "$(id -u)" = 0 ]; then
    chown -R postgres "$state"
    runuser -u postgres -- pgbouncer -d loadtest/peers/pgbouncer.ini
else
    pgbouncer -d loadtest/peers/pgbouncer.ini
fi
sleep 1
for i in a b; do
    kill -0 "$(cat "$state/sluice-pg-$i.pid")" 2>/dev/null \
        || echo "sluice gw-$i did not start: $state/sluice-pg-$i.log" >&2
done
echo "peers up; dev key: $state/dev.key.pem"
