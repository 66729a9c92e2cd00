#!/usr/bin/env bash
# Builds the helm CLI at HELM_VERSION (hack/versions.env) from its Go module into bin/helm,
# for the chart tests (test/helm). A binary already there at that version is reused.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=versions.env
source "${root}/hack/versions.env"
out="${root}/bin"
mkdir -p "${out}"
if [ -x "${out}/helm" ] && [ -f "${out}/.helm-version" ] && [ "$(cat "${out}/.helm-version")" = "${HELM_VERSION}" ]; then
  exit 0
fi
echo ">> building helm ${HELM_VERSION} (first run only; takes a few minutes)" >&2
start=$(date +%s)
tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT
# Outside the repository so that helm's own go.mod decides its dependencies, not ours.
(cd "${tmp}" && GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOBIN="${out}" go install -trimpath -ldflags='-s -w' "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}")
echo "${HELM_VERSION}" > "${out}/.helm-version"
echo ">> built helm ${HELM_VERSION} in $(( $(date +%s) - start ))s" >&2
