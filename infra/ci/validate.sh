#!/usr/bin/env bash
# Validates the delivery configuration: the GitLab pipeline against GitLab's
# schema, the SAM template with cfn-lint, every OpenShift overlay rendered
# and checked against the Kubernetes schemas and this project's own rules
# (Route, security posture, wiring, the deploy job's digest pinning), the
# Dockerfile with hadolint, and the agreement of the SAM template with
# infra/routes.toml and with the code's table definition.
#
# Usage: infra/ci/validate.sh
# Environment:
#   USERS_ADMIN             the built users-admin binary (its `table-definition`
#                           output is the table the code creates), or
#   USERS_TABLE_DEFINITION  a JSON file with that output
#   ROUTES_FILE             routes file (default infra/routes.toml)
#   VENV                    virtualenv with the Python tools (default .venv)
#   KUBERNETES_VERSION      schema version for kubernetes-validate (default 1.30,
#                           the Kubernetes of OpenShift 4.17)
#   KUSTOMIZE               command that renders a kustomization directory
#                           (default: `kubectl kustomize`, else `oc kustomize`,
#                           else `kustomize build`)
set -euo pipefail

export PYTHONDONTWRITEBYTECODE=1
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
venv=${VENV:-.venv}
bin="$venv/bin"
routes=${ROUTES_FILE:-infra/routes.toml}
k8s_version=${KUBERNETES_VERSION:-1.30}

passed=0
failed=0
skipped=0
failures=()

# step NAME COMMAND...: runs one check, prints its output, tallies the result.
step() {
  local name=$1
  shift
  echo
  echo "==> $name"
  echo "    \$ $*"
  if "$@"; then
    passed=$((passed + 1))
    echo "--> ok: $name"
  else
    failed=$((failed + 1))
    failures+=("$name")
    echo "--> FAILED: $name"
  fi
}

skip() {
  skipped=$((skipped + 1))
  echo
  echo "==> SKIPPED: $1"
}

missing=()
for tool in check-jsonschema cfn-lint kubernetes-validate hadolint python; do
  [[ -x "$bin/$tool" ]] || missing+=("$bin/$tool")
done
if ((${#missing[@]})); then
  echo "validate: missing ${missing[*]}: install requirements-dev.txt into $venv" >&2
  exit 1
fi

if [[ -n ${KUSTOMIZE:-} ]]; then
  read -r -a render <<<"$KUSTOMIZE"
elif command -v kubectl >/dev/null; then
  render=(kubectl kustomize)
elif command -v oc >/dev/null; then
  render=(oc kustomize)
elif command -v kustomize >/dev/null; then
  render=(kustomize build)
else
  echo "validate: no kustomize renderer: install kubectl (Debian: kubernetes-client; Alpine: kubectl)" >&2
  exit 1
fi

# Needs kustomize 4 or later (`labels`, inline `patches`): Debian 12's
# kubernetes-client (kubectl 1.20, kustomize 2.0) is too old.
if [[ ${render[0]} == kubectl ]]; then
  echo "renderer: kubectl kustomize ($(kubectl version --client 2>/dev/null | grep -i kustomize || echo 'version unknown'))"
else
  echo "renderer: ${render[*]}"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- GitLab CI -----------------------------------------------------------------
step "GitLab CI file matches GitLab's schema" \
  "$bin/check-jsonschema" --builtin-schema vendor.gitlab-ci .gitlab-ci.yml

# --- AWS SAM ---------------------------------------------------------------------
step "SAM template passes cfn-lint" "$bin/cfn-lint" infra/aws/template.yaml

# --- OpenShift -------------------------------------------------------------------
rendered=()
for overlay in infra/openshift/overlays/*/; do
  env=$(basename "$overlay")
  out="$work/$env.yaml"
  if step "overlay $env renders" bash -c '"${@:2}" "$1" >"$0"' "$out" "$overlay" "${render[@]}"; then
    rendered+=("$out")
  fi
done
if ((${#rendered[@]})); then
  step "rendered overlays match the Kubernetes $k8s_version schemas (strict)" \
    "$bin/kubernetes-validate" --strict --quiet -k "$k8s_version" "${rendered[@]}"
  step "Route: edge TLS, redirect, targets the users Service" \
    "$bin/python" infra/ci/check_route.py "${rendered[@]}"
  step "Deployment: security posture, probes, rollout, Secrets, wiring" \
    "$bin/python" infra/ci/check_deployment.py "${rendered[@]}"
fi

# The deploy job's rendering: the pushed digest must end up in the Deployment.
pinned="registry.invalid/validate/users@sha256:$(printf '%064d' 0)"
for overlay in infra/openshift/overlays/*/; do
  env=$(basename "$overlay")
  out="$work/$env-pinned.yaml"
  if step "deploy.sh renders $env pinned to a digest" \
    env RENDER_ONLY=1 JWT_ISSUER=https://users.invalid KUSTOMIZE="${render[*]}" \
    bash -c '"$1" "$2" "$3" >"$4"' _ infra/openshift/deploy.sh "$env" "$pinned" "$out"; then
    step "deploy.sh output for $env runs exactly the pushed image" \
      "$bin/python" infra/ci/check_deployment.py --expect-image "$pinned" "$out"
  fi
done

# --- Container -------------------------------------------------------------------
if [[ -f Dockerfile ]]; then
  step "Dockerfile passes hadolint" "$bin/hadolint" Dockerfile
else
  skip "hadolint: there is no Dockerfile yet"
fi

# --- Consistency between the Lambda and container flavours and the code ----------
step "SAM template agrees with $routes and the code's table definition" \
  "$bin/python" infra/ci/check_consistency.py --routes "$routes" --template infra/aws/template.yaml

echo
if ((failed)); then
  printf 'validate: failed: %s\n' "${failures[@]}"
fi
if ((skipped)); then
  echo "validate: $passed passed, $failed failed, $skipped skipped"
else
  echo "validate: $passed passed, $failed failed"
fi
((failed == 0))
