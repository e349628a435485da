# Shared by the local run scripts: the dev signing key and the table.
# Sourced, not executed.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
run_dir="$root/.run"
mkdir -p "$run_dir"

# Uses JWT_PRIVATE_KEY(_FILE) if set; otherwise a key generated for this
# checkout (never committed: .run/ is ignored).
ensure_dev_key() {
    local admin=$1
    if [[ -z "${JWT_PRIVATE_KEY:-}" && -z "${JWT_PRIVATE_KEY_FILE:-}" ]]; then
        export JWT_PRIVATE_KEY_FILE="$run_dir/dev-signing-key.pem"
        if [[ ! -s "$JWT_PRIVATE_KEY_FILE" ]]; then
            "$admin" keygen --out "$JWT_PRIVATE_KEY_FILE"
        fi
    fi
}
