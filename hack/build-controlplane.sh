#!/usr/bin/env bash
# Builds the Kubernetes control-plane binaries the tests and the demo run, from the Go
# module proxy, into bin/controlplane. A binary already there is reused: only missing
# ones are built. Usage: hack/build-controlplane.sh [binary...]
#   binaries: etcd kube-apiserver kube-controller-manager kube-scheduler kubectl
# Default: etcd kube-apiserver (what envtest needs).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${root}/bin/controlplane"
mkdir -p "${out}"
cd "${root}/hack/controlplane"

want=("$@")
[ ${#want[@]} -eq 0 ] && want=(etcd kube-apiserver)

pkg_of() {
  case "$1" in
    etcd) echo go.etcd.io/etcd/server/v3 ;;
    kube-apiserver|kube-controller-manager|kube-scheduler|kubectl) echo "k8s.io/kubernetes/cmd/$1" ;;
    *) echo "unknown binary $1" >&2; return 1 ;;
  esac
}

for name in "${want[@]}"; do
  if [ -x "${out}/${name}" ]; then
    continue
  fi
  pkg="$(pkg_of "${name}")"
  echo ">> building ${name} from ${pkg} (first run only; kube-apiserver takes a few minutes)" >&2
  start=$(date +%s)
  CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "${out}/${name}.tmp" "${pkg}"
  mv "${out}/${name}.tmp" "${out}/${name}"
  echo ">> built ${name} in $(( $(date +%s) - start ))s" >&2
done
