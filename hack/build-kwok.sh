#!/usr/bin/env bash
# Builds kwok and kwokctl (the simulated-node cluster tool) at the version of
# hack/versions.env into bin/, once.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=versions.env
source "${root}/hack/versions.env"
mkdir -p "${root}/bin"
for cmd in kwok kwokctl; do
  if [ -x "${root}/bin/${cmd}" ]; then
    continue
  fi
  echo ">> building ${cmd} ${KWOK_VERSION} (first run only, about a minute)" >&2
  start=$(date +%s)
  (cd "$(mktemp -d)" && CGO_ENABLED=0 GOBIN="${root}/bin" go install "sigs.k8s.io/kwok/cmd/${cmd}@${KWOK_VERSION}")
  echo ">> built ${cmd} in $(( $(date +%s) - start ))s" >&2
done
