#!/usr/bin/env bash
# Builds the real third-party controllers the demo and the end-to-end tests run, into
# bin/, once each (a second run reuses them):
#   bin/external-secrets          External Secrets Operator, from its root module
#   bin/cert-manager-controller   cert-manager's controllers, run in-process by hack/certmanager
# Versions come from hack/versions.env and the go.mod files under hack/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=versions.env
source "${root}/hack/versions.env"
mkdir -p "${root}/bin"

stamp_ok() { [ -x "$1" ] && [ -f "$1.version" ] && [ "$(cat "$1.version")" = "$2" ]; }

out="${root}/bin/external-secrets"
if ! stamp_ok "${out}" "${EXTERNAL_SECRETS_VERSION}"; then
  echo ">> building External Secrets ${EXTERNAL_SECRETS_VERSION} (first run only; several minutes on 2 cores)" >&2
  start=$(date +%s)
  (cd "${root}/hack/externalsecrets" && CGO_ENABLED=0 go build -o "${out}" github.com/external-secrets/external-secrets)
  echo "${EXTERNAL_SECRETS_VERSION}" >"${out}.version"
  echo ">> built external-secrets in $(( $(date +%s) - start ))s" >&2
fi

out="${root}/bin/cert-manager-controller"
if ! stamp_ok "${out}" "${CERT_MANAGER_VERSION}"; then
  echo ">> building cert-manager ${CERT_MANAGER_VERSION} controllers (first run only; several minutes on 2 cores)" >&2
  start=$(date +%s)
  (cd "${root}/hack/certmanager" && CGO_ENABLED=0 go build -o "${out}" .)
  echo "${CERT_MANAGER_VERSION}" >"${out}.version"
  echo ">> built cert-manager-controller in $(( $(date +%s) - start ))s" >&2
fi
