#!/usr/bin/env bash
# Runs a command with a DynamoDB-compatible endpoint in AWS_ENDPOINT_URL.
# If AWS_ENDPOINT_URL is already set (LocalStack in CI, a developer's own
# endpoint), it is used as it is; otherwise moto's server is started on a
# free loopback port for the duration of the command and stopped after it.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

export AWS_REGION=${AWS_REGION:-eu-central-1}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}

if [[ -n "${AWS_ENDPOINT_URL:-}" ]]; then
    echo "with-dynamodb: using AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL" >&2
    exec "$@"
fi

moto="$root/.venv/bin/moto_server"
if [[ ! -x "$moto" ]]; then
    echo "with-dynamodb: $moto not found; run 'make venv' first" >&2
    exit 1
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp -t moto.XXXXXX.log)
"$moto" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto_pid=$!
cleanup() {
    kill "$moto_pid" 2>/dev/null || true
    wait "$moto_pid" 2>/dev/null || true
    rm -f "$log"
}
trap cleanup EXIT INT TERM

export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null "$AWS_ENDPOINT_URL/moto-api/" 2>/dev/null; then
        break
    fi
    if ! kill -0 "$moto_pid" 2>/dev/null; then
        echo "with-dynamodb: moto exited during start-up:" >&2
        cat "$log" >&2
        exit 1
    fi
    sleep 0.1
done
echo "with-dynamodb: moto on $AWS_ENDPOINT_URL" >&2
"$@"
