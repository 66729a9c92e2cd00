#!/usr/bin/env bash
# Renders config/default (CRDs, RBAC, the manager and its metrics Service) for one image,
# to stdout: the input of `make build-installer` (dist/install.yaml) and `make deploy`.
#   hack/installer.sh IMAGE
# The image goes into both places that name it: the manager container, and its
# GATEWAY_IMAGE, the image the operator gives every gateway sidecar (kustomize's images:
# transformer alone would leave the gateway on the old image). KUSTOMIZE names the
# kustomize binary (make passes bin/kustomize).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
img="${1:?usage: hack/installer.sh IMAGE}"
kustomize="${KUSTOMIZE:-${root}/bin/kustomize}"
# The overlay lives in the repository (kustomize loads patches and bases only below or
# beside the overlay's root), in a git-ignored folder, one per run.
mkdir -p "${root}/dist"
overlay="$(mktemp -d "${root}/dist/.installer.XXXXXX")"
trap 'rm -rf "${overlay}"' EXIT
cat > "${overlay}/kustomization.yaml" <<YAML
resources:
- ../../config/default
patches:
- patch: |-
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: voiceagent-operator
      namespace: voiceagent-system
    spec:
      template:
        spec:
          containers:
          - name: manager
            image: "${img}"
            env:
            - name: GATEWAY_IMAGE
              value: "${img}"
YAML
"${kustomize}" build "${overlay}"
