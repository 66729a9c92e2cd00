#!/usr/bin/env bash
# Copies the real CRDs of cert-manager, External Secrets Operator and KEDA, at the versions of
# hack/versions.env, from their Go modules into bin/crds/<project>/. Reused when present.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=versions.env
source "${root}/hack/versions.env"
out="${root}/bin/crds"

fetch() { # module version subdir glob dest
  local mod="$1" ver="$2" sub="$3" glob="$4" dest="$5"
  if [ -f "${dest}/.version" ] && [ "$(cat "${dest}/.version")" = "${ver}" ]; then
    return
  fi
  local dir
  dir="$(cd "$(mktemp -d)" && go mod download -json "${mod}@${ver}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [ -n "${dir}" ] || { echo "could not download ${mod}@${ver}" >&2; exit 1; }
  rm -rf "${dest}" && mkdir -p "${dest}"
  cp "${dir}/${sub}"/${glob} "${dest}/"
  chmod u+w "${dest}"/*.yaml
  echo "${ver}" > "${dest}/.version"
  echo ">> CRDs of ${mod}@${ver} in ${dest}" >&2
}

fetch github.com/cert-manager/cert-manager "${CERT_MANAGER_VERSION}" deploy/crds 'cert-manager.io_*.yaml' "${out}/cert-manager"
fetch github.com/external-secrets/external-secrets "${EXTERNAL_SECRETS_VERSION}" config/crds/bases 'external-secrets.io_*.yaml' "${out}/external-secrets"
fetch github.com/kedacore/keda/v2 "${KEDA_VERSION}" config/crd/bases 'keda.sh_scaledobjects.yaml' "${out}/keda"
