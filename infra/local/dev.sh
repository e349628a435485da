#!/usr/bin/env bash
# `make dev`: the debug function binaries under `cargo lambda watch`, with
# the routes of SPEC §3 (from the workspace's lambda.watch.router metadata),
# against the endpoint in AWS_ENDPOINT_URL. Ctrl-C stops everything.
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$root"

port=${DEV_PORT:-9000}
bin="$root/target/debug"
ensure_dev_key "$bin/users-admin"
"$bin/users-admin" create-table

pids=()
stop() {
    trap - EXIT INT TERM
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap stop EXIT INT TERM

"$root/.venv/bin/cargo-lambda" lambda watch --only-lambda-apis -A 127.0.0.1 -P "$port" &
pids+=($!)
# A function whose runtime API refuses connections exits: wait until
# cargo lambda watch listens.
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
for function in register login jwks; do
    AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:$port/.rt/$function" \
    AWS_LAMBDA_FUNCTION_NAME="$function" \
    AWS_LAMBDA_FUNCTION_VERSION=1 \
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256 \
        "$bin/$function" &
    pids+=($!)
done

cat <<MSG

users is running under cargo lambda watch on http://127.0.0.1:$port (Ctrl-C stops it)

  curl -i -X POST http://127.0.0.1:$port/api/v1/users -H 'content-type: application/json' \\
       -d '{"name":"Ada Lovelace","email":"ada@example.com","password":"correct horse battery"}'
  curl -i -X POST http://127.0.0.1:$port/api/v1/users/login -H 'content-type: application/json' \\
       -d '{"email":"ada@example.com","password":"correct horse battery"}'
  curl -i http://127.0.0.1:$port/.well-known/jwks.json

MSG
wait -n "${pids[@]}"
