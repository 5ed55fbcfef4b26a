#!/usr/bin/env bash
# Runs Sluice's whole test suite. On Debian, run as root, it first installs what the
# tests need and is missing: PostgreSQL server binaries, psql and pgbench, MariaDB
# server and client, curl. The tests start their own throw-away servers on free loopback
# ports; nothing already running on this machine is used.
set -euo pipefail
cd "$(dirname "$0")"

need=()
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
command -v psql >/dev/null || need+=(postgresql-client)
command -v pgbench >/dev/null || need+=(postgresql-client postgresql)
[ -x /usr/sbin/mariadbd ] || need+=(mariadb-server-core)
command -v mariadb >/dev/null || need+=(mariadb-client-core)
command -v runuser >/dev/null || need+=(util-linux)
# The HTTP and demo tests drive the gateway with curl; the CLI tests read the dev
# key with openssl.
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
# The SSH tests start a throw-away sshd and drive it with ssh, sftp and sshpass.
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v sshpass >/dev/null || need+=(sshpass)
# The console tests drive headless Chromium over WebDriver.
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
# PostgreSQL's own regression suite runs through the gateway when it is beside the
# checkout (../shared/conformance); pg_regress comes with the server-dev package.
conformance="${SLUICE_CONFORMANCE_DIR:-$PWD/../shared/conformance}"
if [ -f "$conformance/pg-regress-15.18.tar.xz" ]; then
    compgen -G '/usr/lib/postgresql/15/lib/pgxs/src/test/regress/pg_regress' >/dev/null || need+=(postgresql-server-dev-15)
    command -v xz >/dev/null || need+=(xz-utils)
fi
# pg_query (the classifier's differential-test oracle) generates bindings with libclang.
# libclang itself, not libclang-cpp (which other packages pull in alone).
compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null || compgen -G '/usr/lib/*-linux-gnu/libclang-[0-9]*.so*' >/dev/null || need+=(libclang-dev)

if ((${#need[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "test.sh: installing ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
    else
        echo "test.sh: missing ${need[*]}; on Debian: sudo apt-get install ${need[*]}" >&2
        exit 1
    fi
fi
# The servers refuse to run as root; the harness runs them as these system users.
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    id mysql >/dev/null 2>&1 || useradd --system --no-create-home mysql
fi

cargo test --workspace "$@"
if (($#)); then
    exit 0 # a filtered run: Miri and the conformance run only go with the whole suite
fi
# The audit ring's unsafe code under Miri (Stacked Borrows, data races), on the
# nightly toolchain, fetched with rustup if it is missing.
if ! cargo +nightly miri --version >/dev/null 2>&1; then
    rustup component add miri rust-src --toolchain nightly >/dev/null 2>&1 \
        || rustup toolchain install nightly --profile minimal --component miri,rust-src >/dev/null 2>&1 || true
fi
if cargo +nightly miri --version >/dev/null 2>&1; then
    cargo +nightly miri test -p sluice-ring --lib
else
    echo "test.sh: Miri could not be installed (rustup component add miri rust-src --toolchain nightly): the ring's Miri run NOT done" >&2
fi
if [ -f "$conformance/pg-regress-15.18.tar.xz" ]; then
    SLUICE_CONFORMANCE_DIR="$conformance" cargo test -p sluice --test conformance -- --ignored --nocapture
else
    echo "test.sh: PostgreSQL regression suite not found at $conformance: conformance run NOT done" >&2
fi
