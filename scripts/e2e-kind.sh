#!/usr/bin/env bash
# End to end on a throwaway kind cluster, for a machine with Docker:
#
#   1. create a kind cluster (its own kubeconfig; yours is left alone)
#   2. build the image and load it into the cluster
#   3. helm install the chart (the CRD with it), watching the examples' namespaces only
#   4. deploy the provider sandboxes (deploy/dev) and the examples pointed at them
#   5. wait until every example Trigger is Ready
#   6. run tests/e2e against the cluster (they run their own operator in ct-e2e-* namespaces)
#   7. delete the Triggers, uninstall, delete the cluster
#
# Needs docker, kind, kubectl and helm on PATH, and the project's virtualenv:
#   python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'
#
# Environment: CLUSTER (default cloudtriggers-e2e), KEEP_CLUSTER=1 to keep it (a kubeconfig is
# printed), PYTHON (default .venv/bin/python), PROVIDERS (default: those the operator implements),
# PYTEST_ARGS (extra arguments for pytest).
set -euo pipefail

cd "$(dirname "$0")/.."

CLUSTER="${CLUSTER:-cloudtriggers-e2e}"
IMAGE="cloudtriggers:dev"
RELEASE="cloudtriggers"
NAMESPACE="cloudtriggers"
PYTHON="${PYTHON:-.venv/bin/python}"
KEEP_CLUSTER="${KEEP_CLUSTER:-0}"

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'e2e-kind: %s\n' "$*" >&2; exit 1; }

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || die "$tool is not on PATH"
done
[[ -x "$PYTHON" ]] || die "no $PYTHON: python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'"
docker info >/dev/null 2>&1 || die "the Docker daemon does not answer"

# examples.py takes the providers the operator implements unless PROVIDERS names some.
examples=("$PYTHON" deploy/dev/examples.py)
if [[ -n "${PROVIDERS:-}" ]]; then
  examples+=(--providers "$PROVIDERS")
fi
EXAMPLE_NAMESPACES="$("${examples[@]}" --namespaces)"

KUBECONFIG="$(mktemp -t "kubeconfig-$CLUSTER.XXXXXX")"
export KUBECONFIG

diagnose() {
  log "diagnostics"
  kubectl get pods,deployments,leases -A -o wide || true
  kubectl get triggers -A -o wide || true
  kubectl describe triggers -A || true
  kubectl -n "$NAMESPACE" logs "deployment/$RELEASE" --tail=200 || true
  kubectl -n cloudtriggers-sandbox logs deployment/sandbox --tail=50 || true
}

cleanup() {
  local status=$?
  if (( status != 0 )); then
    diagnose
  fi
  if [[ "$KEEP_CLUSTER" == "1" ]]; then
    log "keeping cluster $CLUSTER: export KUBECONFIG=$KUBECONFIG; delete it with: kind delete cluster --name $CLUSTER"
  else
    log "deleting cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    rm -f "$KUBECONFIG"
  fi
  exit "$status"
}
trap cleanup EXIT

log "creating kind cluster $CLUSTER"
kind create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" --wait 120s

log "building $IMAGE and loading it into the cluster"
docker build --target runtime --tag "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

log "deploying the provider sandboxes"
kubectl apply -k deploy/dev
kubectl -n cloudtriggers-sandbox rollout status deployment/sandbox --timeout=120s

log "installing the chart (watching $EXAMPLE_NAMESPACES)"
# The Roles of watchNamespaces need their namespaces; examples.py declares them too.
for ns in ${EXAMPLE_NAMESPACES//,/ }; do
  kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f -
done
helm install "$RELEASE" deploy/helm/cloudtriggers \
  --namespace "$NAMESPACE" --create-namespace \
  --set image.repository=cloudtriggers --set image.tag=dev --set image.pullPolicy=Never \
  --set "watchNamespaces={$EXAMPLE_NAMESPACES}" \
  --set logFormat=text --set logLevel=debug \
  --set 'endpointPolicy.allowed={http://sandbox.cloudtriggers-sandbox.svc}' \
  --wait --timeout 180s
kubectl wait --for=condition=Established crd/triggers.cloudtriggers.io --timeout=60s

log "applying the examples"
"${examples[@]}" | kubectl apply -f -
for ns in ${EXAMPLE_NAMESPACES//,/ }; do
  kubectl -n "$ns" wait --for=condition=Ready trigger --all --timeout=120s
done
kubectl get triggers -A

log "running tests/e2e"
# shellcheck disable=SC2086  # PYTEST_ARGS is a list of arguments
"$PYTHON" -m pytest tests/e2e ${PYTEST_ARGS:-}

log "deleting the example Triggers while the operator runs (finalizers), then uninstalling"
for ns in ${EXAMPLE_NAMESPACES//,/ }; do
  kubectl -n "$ns" delete triggers --all --wait --timeout=120s
done
helm uninstall "$RELEASE" --namespace "$NAMESPACE" --wait
log "e2e passed"
