#!/usr/bin/env bash
# What the audit log costs, side by side in one run: the same Sluice build and
# configuration three times, differing only in `[audit]` (none, `batched`,
# `strict`), against the peers `loadtest/peers/start.sh` starts (PostgreSQL's
# `loadtest` database, the nginx JSON upstream on :7100, the dev key).
#
#   loadtest/peers/start.sh            # once
#   loadtest/durability.sh [SECONDS_PER_ENDPOINT] [ROUNDS]
#
# Runs `pg-select --simple` (pgbench -S: one command record per query) at 8 and
# 32 connections and `http-json` at 32, and prints each table with the ratio to
# the gateway without an audit log. Gateways: PostgreSQL :6451-6453 (admin
# :9451-9453), HTTP :7151-7153; audit logs under /tmp/sluice-durability/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-12}
rounds=${2:-3}
state=/tmp/sluice-durability
peers=/tmp/sluice-peers
[ -f "$peers/dev.key.pem" ] || { echo "run loadtest/peers/start.sh first" >&2; exit 1; }
cargo build --release -q -p sluice -p sluice-loadtest
rm -rf "$state" && mkdir -p "$state"
. loadtest/gateways.sh

# variant CONFIG NAME DURABILITY PORT_FROM PORT_TO [ADMIN_FROM ADMIN_TO]
variant() {
    local cfg=$1 name=$2 durability=$3 from=$4 to=$5
    local out="$state/$name.toml"
    sed -e "s#127.0.0.1:$from\"#127.0.0.1:$to\"#" \
        -e "s#dir = \"$peers/[a-z-]*\"#dir = \"$state/audit-$name\"#" \
        -e "s#durability = \"batched\"#durability = \"$durability\"#" "$cfg" >"$out"
    if [ -n "${6:-}" ]; then sed -i "s#127.0.0.1:$6\"#127.0.0.1:$7\"#" "$out"; fi
    # The masked twin of the PostgreSQL target is not measured here.
    python3 - "$out" "$durability" <<'PY'
import re, sys
path, durability = sys.argv[1], sys.argv[2]
text = open(path).read()
cut = text.find('\n# The same with masking')
if cut >= 0:
    text = text[:cut + 1]
if durability == "none":
    text = re.sub(r'\[audit\]\n(?:[^\[\n][^\n]*\n|\n)*', '', text)
open(path, 'w').write(text)
PY
    gateway "$name" "$out"
}
ports_free 6451 6452 6453 9451 9452 9453 7151 7152 7153
i=0
for d in none batched strict; do
    variant loadtest/peers/sluice-pg.toml "pg-$d" "$d" 6435 $((6451 + i)) 9471 $((9451 + i))
    variant loadtest/peers/sluice-http.toml "http-$d" "$d" 7103 $((7151 + i))
    i=$((i + 1))
done
sleep 2
listening 6451 6452 6453 7151 7152 7153

for c in 8 32; do
    echo "== pg-select --simple, $c connections"
    run pg-select --simple --key "$peers/dev.key.pem" --database loadtest \
        --compare none=127.0.0.1:6451 batched=127.0.0.1:6452 strict=127.0.0.1:6453 --connections "$c"
done
echo "== http-json, 32 connections"
run http-json --key "$peers/dev.key.pem" \
    --compare none=127.0.0.1:7151 batched=127.0.0.1:7152 strict=127.0.0.1:7153 --connections 32
