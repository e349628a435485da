#!/usr/bin/env bash
# Deploys the users service to the current OpenShift project: renders the
# environment's overlay with the image pinned to a digest (and the
# environment's issuer and host), applies it, waits for the rollout and rolls
# back if the rollout fails. The GitLab deploy jobs run it; an operator can
# too (docs/deploy.md).
#
# Usage: infra/openshift/deploy.sh ENVIRONMENT IMAGE@sha256:DIGEST
#
# Environment:
#   JWT_ISSUER        `iss` claim, the public URL of the service (default:
#                     https://$ROUTE_HOST; one of the two is required)
#   ROUTE_HOST        public host name of the Route (default: the host
#                     OpenShift generates)
#   OPENSHIFT_NAMESPACE  project to deploy into (default: oc's current one)
#   ROLLOUT_TIMEOUT   how long to wait for the rollout (default 5m)
#   CHANGE_CAUSE      recorded on the Deployment (default: the image)
#   DEPLOY_ENV_FILE   where to write DEPLOY_URL=… (dotenv; default deploy.env)
#   RENDER_ONLY=1     print the manifests and stop (no cluster needed)
#   KUSTOMIZE         renderer (default `oc kustomize`; `kubectl kustomize`
#                     when only rendering and oc is missing)
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
[[ $# -eq 2 ]] || usage
environment=$1
image=$2

here=$(cd "$(dirname "$0")" && pwd)
overlay="$here/overlays/$environment"
[[ -f "$overlay/kustomization.yaml" ]] || { echo "deploy: no overlay $overlay" >&2; exit 2; }
if [[ ! $image =~ ^([^@[:space:]]+)@(sha256:[0-9a-f]{64})$ ]]; then
  echo "deploy: image must be pinned as REPOSITORY@sha256:<64 hex>, got '$image'" >&2
  exit 2
fi
repository=${BASH_REMATCH[1]}
digest=${BASH_REMATCH[2]}

route_host=${ROUTE_HOST:-}
issuer=${JWT_ISSUER:-${route_host:+https://$route_host}}
if [[ -z $issuer ]]; then
  echo "deploy: set JWT_ISSUER (or ROUTE_HOST): tokens must name this service as their issuer" >&2
  exit 2
fi
[[ $issuer =~ ^https?://[^[:space:]]+$ ]] || { echo "deploy: JWT_ISSUER is not a URL: '$issuer'" >&2; exit 2; }
[[ -z $route_host || $route_host =~ ^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$ ]] \
  || { echo "deploy: ROUTE_HOST is not a host name: '$route_host'" >&2; exit 2; }
cause=${CHANGE_CAUSE:-$image}
cause=${cause//[\"\\]/}  # it goes into a double-quoted YAML string

if [[ -n ${KUSTOMIZE:-} ]]; then
  read -r -a kustomize <<<"$KUSTOMIZE"
elif [[ -n ${RENDER_ONLY:-} ]] && ! command -v oc >/dev/null; then
  kustomize=(kubectl kustomize)
else
  kustomize=(oc kustomize)
fi
ns=()
[[ -n ${OPENSHIFT_NAMESPACE:-} ]] && ns=(--namespace "$OPENSHIFT_NAMESPACE")

# kustomize only accepts relative paths between kustomizations, so the
# pinning layer lives beside the overlays for the length of this run.
work=$(mktemp -d "$here/.deploy.XXXXXX")
trap 'rm -rf "$work"' EXIT
{
  cat <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../overlays/$environment
images:
  - name: users
    newName: $repository
    digest: $digest
configMapGenerator:
  - name: users-config
    behavior: merge
    literals:
      - JWT_ISSUER=$issuer
patches:
  - patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata:
        name: users
        annotations:
          kubernetes.io/change-cause: "$cause"
YAML
  if [[ -n $route_host ]]; then
    cat <<YAML
  - patch: |-
      apiVersion: route.openshift.io/v1
      kind: Route
      metadata:
        name: users
      spec:
        host: $route_host
YAML
  fi
} >"$work/kustomization.yaml"

"${kustomize[@]}" "$work" >"$work/manifests.yaml"
if [[ -n ${RENDER_ONLY:-} ]]; then
  cat "$work/manifests.yaml"
  exit 0
fi

echo "deploy: $environment <- $image (issuer $issuer)"
oc "${ns[@]}" apply -f "$work/manifests.yaml"
if ! oc "${ns[@]}" rollout status deployment/users --timeout="${ROLLOUT_TIMEOUT:-5m}"; then
  echo "deploy: rollout failed; recent events and pods:" >&2
  oc "${ns[@]}" get pods -l app.kubernetes.io/name=users -o wide >&2 || true
  oc "${ns[@]}" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 20 >&2 || true
  echo "deploy: rolling back to the previous revision" >&2
  if oc "${ns[@]}" rollout undo deployment/users; then
    oc "${ns[@]}" rollout status deployment/users --timeout="${ROLLOUT_TIMEOUT:-5m}" >&2 \
      || echo "deploy: the rollback did not become ready either: look at the project now" >&2
  else
    echo "deploy: nothing to roll back to (first deployment?)" >&2
  fi
  exit 1
fi

host=$(oc "${ns[@]}" get route users -o jsonpath='{.spec.host}')
echo "DEPLOY_URL=https://$host" >"${DEPLOY_ENV_FILE:-deploy.env}"
echo "deploy: $environment is live at https://$host"
