#!/usr/bin/env bash
# `make bench`: installs what the benchmark needs and is missing (nginx and
# openssl from Debian; the virtualenv with moto and cargo-lambda comes from
# `make venv`), builds the release binaries once, and runs users-bench
# against moto (started on a free loopback port by with-dynamodb.sh). It
# writes docs/benchmarks.md and docs/benchmarks-latency.svg.
#
# Environment: BENCH_ROUNDS (3) and BENCH_SECONDS (3) per comparison;
# BENCH_ARGS for any other users-bench flag (see `users-bench --help`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# System packages: only what is missing, non-interactively. The container
# policy of Debian images keeps apt from starting nginx as a service; the
# benchmark starts its own on a free port with a generated configuration.
missing=()
[[ -x /usr/sbin/nginx ]] || command -v nginx >/dev/null || missing+=(nginx)
command -v openssl >/dev/null || missing+=(openssl)
if ((${#missing[@]})); then
    echo "bench: installing ${missing[*]}" >&2
    sudo=
    [[ $(id -u) == 0 ]] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# One release build of everything the benchmark runs.
cargo build --release --quiet \
    -p register -p login -p jwks -p emulator -p users-admin -p users-bench

# ARGON2_* and JWT_* from the caller's shell would make the functions differ
# from the bare references; the benchmark sets what it needs itself.
unset ARGON2_MEMORY_KIB ARGON2_ITERATIONS ARGON2_PARALLELISM JWT_PRIVATE_KEY JWT_PUBLIC_KEYS_FILE

# shellcheck disable=SC2086 # BENCH_ARGS is a list of flags
exec infra/local/with-dynamodb.sh target/release/users-bench \
    --root "$root" \
    --bin-dir target/release \
    --rounds "${BENCH_ROUNDS:-3}" \
    --seconds "${BENCH_SECONDS:-3}" \
    ${BENCH_ARGS:-}
