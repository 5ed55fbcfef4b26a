#!/usr/bin/env bash
# Starts the peers of the ssh-* scenarios, all on loopback, keys and configs in
# /tmp/sluice-peers/ssh/ (generated on first start, kept after):
#   sshd   :2201  `direct`: a throw-away OpenSSH sshd (own config and host key)
#                 that logs in the current user with a generated client key
#   sshd   :2202  `proxyjump`: a second sshd, the jump host in front of :2201
#                 (both under `sluice-loadtest reaper`, see below)
#   sluice :2203  `sluice`: Sluice's SSH endpoint in front of :2201
#                 (loadtest/peers/sluice-ssh.toml, filled in here; batched audit,
#                 a fresh one at each start)
# Works as root (sshd then wants /run/sshd) and as any other user (sshd then
# logs in only that user).
#   loadtest/peers/ssh.sh          # start (again: stops the previous ones first)
#   loadtest/peers/ssh.sh stop
set -euo pipefail
cd "$(dirname "$0")/../.."
state=/tmp/sluice-peers
dir=$state/ssh
SLUICE=${SLUICE:-./target/release/sluice}
LOADTEST=${LOADTEST:-./target/release/sluice-loadtest}
SSHD=/usr/sbin/sshd

# The pid of the process listening on 127.0.0.1:PORT (nothing if none). The
# port, not `$!`: `setsid` may fork, and sshd forks a process per connection.
listener() {
    ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2 || true
}

# Waits (up to 10 s) for something to listen on PORT, then writes its pid to NAME.pid.
await() {
    local name=$1 port=$2 pid=
    for _ in $(seq 100); do
        pid=$(listener "$port")
        [ -n "$pid" ] && break
        sleep 0.1
    done
    if [ -z "$pid" ]; then
        echo "$name did not start on :$port; see $dir/$name.log" >&2
        exit 1
    fi
    echo "$pid" >"$dir/$name.pid"
}

# Stops what a previous start recorded, by pid, and only if that pid still
# runs one of this directory's configs.
stop() {
    for name in target jump sluice; do
        local f=$dir/$name.pid
        [ -f "$f" ] || continue
        local pid
        pid=$(cat "$f")
        if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$dir/"; then
            # An sshd's per-connection processes (children of the listener) too.
            for child in $(pgrep -P "$pid" || true); do kill "$child" 2>/dev/null || true; done
            kill "$pid" 2>/dev/null || true
        fi
        rm -f "$f"
    done
}

if [ "${1:-}" = stop ]; then
    stop
    exit 0
fi

if [ ! -x "$SSHD" ] || ! command -v ssh-keygen >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client
    else
        echo "needs $SSHD and ssh-keygen (apt-get install openssh-server openssh-client)" >&2
        exit 1
    fi
fi
[ -x "$SLUICE" ] || cargo build --release -q -p sluice
[ -x "$LOADTEST" ] || cargo build --release -q -p sluice-loadtest
stop
mkdir -p "$dir"
chmod 700 "$dir"
for key in target_host_key jump_host_key client_key; do
    [ -f "$dir/$key" ] || ssh-keygen -q -t ed25519 -N '' -C "sluice-loadtest-$key" -f "$dir/$key"
done
cp "$dir/client_key.pub" "$dir/authorized_keys"
mkdir -p "$dir/home"
[ -f "$state/dev.key.pem" ] || "$SLUICE" token keygen --out "$state" >/dev/null
# sshd started as root wants its privilege separation directory.
if [ "$(id -u)" = 0 ]; then
    mkdir -p /run/sshd
    chmod 755 /run/sshd
fi

# NAME PORT: a config of its own for each sshd; the same client key logs in at both.
# Commands run with an empty HOME: sshd runs them with the account's shell,
# and bash then reads ~/.bashrc, whose contents are the machine's (root's here
# runs `pyenv init`, ~100 ms of CPU per command), not what is measured.
sshd_config() {
    local config=$dir/$1.sshd_config
    cat >"$config" <<EOF
Port $2
ListenAddress 127.0.0.1
HostKey $dir/$1_host_key
PidFile none
AuthorizedKeysFile $dir/authorized_keys
StrictModes no
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
PrintMotd no
PrintLastLog no
MaxStartups 300
MaxSessions 300
LogLevel ERROR
SetEnv HOME=$dir/home
EOF
    # OpenSSH 9.8+ penalises a source address whose connections end early
    # (with --new-connection: all of them, from 127.0.0.1); older ones refuse the option.
    if "$SSHD" -t -f "$config" -o PerSourcePenalties=no 2>/dev/null; then
        echo "PerSourcePenalties no" >>"$config"
    fi
    "$SSHD" -t -f "$config"
}
sshd_config target 2201
sshd_config jump 2202

host_key=$(cut -d' ' -f1,2 "$dir/target_host_key.pub")
sed -e "s|@USER@|$(id -un)|" -e "s|@HOST_KEY@|$host_key|" \
    loadtest/peers/sluice-ssh.toml >"$dir/sluice-ssh.toml"
# A fresh audit log at each start (ssh-stream's recordings are large): the
# log, and the key and anchor of its hash chain, which the gateway checks the
# log against when it starts.
rm -rf "$dir/audit" "$dir"/audit.signing.*

# Each server in its own session, as start.sh explains (autogroup scheduling).
# Each sshd under `sluice-loadtest reaper`: sshd's per-connection monitor exits
# without waiting for the connection's session process, whose CPU (and that
# of every command it ran) would then leave the sshd's process tree; the
# reaper waits for it instead, and the load test counts the tree from there.
# Stopping the sshd stops its reaper, and the other way round.
for peer in "target 2201" "jump 2202"; do
    set -- $peer
    setsid "$LOADTEST" reaper "$SSHD" -D -f "$dir/$1.sshd_config" -E "$dir/$1.log" </dev/null >/dev/null 2>&1 &
    await "$1" "$2"
done
setsid "$SLUICE" serve --config "$dir/sluice-ssh.toml" </dev/null >"$dir/sluice.log" 2>&1 &
await sluice 2203
echo "ssh peers up: direct :2201 (pid $(cat "$dir/target.pid")), proxyjump :2202 (pid $(cat "$dir/jump.pid")), sluice :2203 (pid $(cat "$dir/sluice.pid"))"
echo "client key: $dir/client_key; dev key: $state/dev.key.pem"
