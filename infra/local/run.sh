#!/usr/bin/env bash
# `make run`: the service as the container runs it, on this machine: the
# release binaries under the emulator with every route of infra/routes.toml,
# on http://127.0.0.1:$PORT (default 8080).
#
# Builds the release binaries, starts moto unless AWS_ENDPOINT_URL names an
# endpoint already (LocalStack, ...), creates the table, generates a dev
# signing key unless JWT_PRIVATE_KEY(_FILE) is set, starts the emulator and
# waits until every function is warm. Ctrl-C stops everything: the emulator
# gets SIGTERM, drains in-flight requests and stops its functions; moto stops.
#
# Environment: PORT (8080), EMULATOR_BIND (127.0.0.1 here; the container
# listens on every interface), JWT_ISSUER (http://localhost:$PORT), and every
# function setting of the README (USERS_TABLE, JWT_*, ARGON2_*, AWS_*).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=infra/local/common.sh
source "$here/common.sh"
cd "$root"

bin="$root/target/release"

# First pass: build, then run the rest with a DynamoDB endpoint (moto is
# started and stopped around it by with-dynamodb.sh unless one is given).
if [[ -z ${USERS_RUN_BUILT:-} ]]; then
    cargo build --release -p register -p login -p jwks -p emulator -p users-admin
    export USERS_RUN_BUILT=1
    exec "$here/with-dynamodb.sh" "$here/run.sh"
fi

port=${PORT:-8080}
export PORT=$port
export EMULATOR_BIND=${EMULATOR_BIND:-127.0.0.1}
export JWT_ISSUER=${JWT_ISSUER:-http://localhost:$port}
# Probed on the loopback address, shown with the issuer's host name.
probe="http://127.0.0.1:$port"
base="http://localhost:$port"
if [[ $EMULATOR_BIND != 127.0.0.1 && $EMULATOR_BIND != 0.0.0.0 ]]; then
    probe="http://$EMULATOR_BIND:$port"
    base=$probe
fi

ensure_dev_key "$bin/users-admin"
"$bin/users-admin" create-table

# Its own session, so the terminal's Ctrl-C reaches this script only, which
# then stops the emulator the way a container platform does: SIGTERM.
setsid "$bin/emulator" --routes "$root/infra/routes.toml" --bin-dir "$bin" &
emulator=$!

# shellcheck disable=SC2317 # called by the trap
stop() {
    trap - INT TERM
    echo
    echo "run: stopping the emulator (SIGTERM)" >&2
    kill -TERM "$emulator" 2>/dev/null || true
    status=0
    wait "$emulator" || status=$?
    echo "run: emulator exited with status $status" >&2
    exit "$status"
}
trap stop INT TERM

ready=
for _ in $(seq 1 300); do
    if curl -fsS -o /dev/null "$probe/_emulator/health/ready" 2>/dev/null; then
        ready=1
        break
    fi
    if ! kill -0 "$emulator" 2>/dev/null; then
        break
    fi
    sleep 0.1
done
if [[ -z $ready ]]; then
    echo "run: the emulator did not become ready on $probe (see its log above)" >&2
    kill -TERM "$emulator" 2>/dev/null || true
    wait "$emulator" 2>/dev/null || true
    exit 1
fi

cat <<MSG

users is running on $base (Ctrl-C stops it)

  curl -i -X POST $base/api/v1/users -H 'content-type: application/json' \\
       -d '{"name":"Ada Lovelace","email":"ada@example.com","password":"correct horse battery"}'
  curl -i -X POST $base/api/v1/users/login -H 'content-type: application/json' \\
       -d '{"email":"ada@example.com","password":"correct horse battery"}'
  curl -i $base/.well-known/jwks.json

MSG

# Waits for Ctrl-C (the trap stops the emulator) or for the emulator to end.
status=0
wait "$emulator" || status=$?
trap - INT TERM
echo "run: the emulator exited on its own with status $status" >&2
exit "$status"
