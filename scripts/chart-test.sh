#!/usr/bin/env bash
# Helm chart tests: lint, render (defaults and every optional feature), strict
# validation for Kubernetes 1.33, the picsift custom resources and
# crds/examples/ against the generated CRDs, the values schema, and
# compose.yaml against the Compose specification's schema. Uses
# the Helm 4 engine of helm-python-sdk (no helm binary) in a virtualenv at
# .venv-chart, made on first run. Extra arguments go to pytest (e.g. -k rbac).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-chart
REQUIREMENTS=(
  helm-python-sdk==0.2.2
  kubernetes-validate==1.37.0
  jsonschema==4.26.0
  PyYAML==6.0.3
  pytest==9.2.0
  check-jsonschema==0.39.0
)
STAMP="$VENV/.requirements"

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "chart-test: creating virtualenv $VENV"
  python3 -m venv "$VENV"
fi
if [[ "$(cat "$STAMP" 2>/dev/null)" != "${REQUIREMENTS[*]}" ]]; then
  echo "chart-test: installing ${REQUIREMENTS[*]}"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}"
  echo "${REQUIREMENTS[*]}" >"$STAMP"
fi

echo "chart-test: running tests/chart"
export PYTHONDONTWRITEBYTECODE=1
exec "$VENV/bin/python" -m pytest tests/chart -v -s -p no:cacheprovider --rootdir tests/chart "$@"
