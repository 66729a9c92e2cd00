#!/usr/bin/env bash
# A whole voiceagent-operator installation on one machine, no Docker, no cloud:
# a kwok cluster (real kube-apiserver, controller-manager, scheduler; simulated nodes),
# the real External Secrets and cert-manager controllers, and our manager.
#
#   hack/demo.sh up [--no-samples]   start everything (and apply the demo objects)
#   hack/demo.sh down                stop everything and delete the cluster
#   hack/demo.sh env                 print the variables the e2e suite reads
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${root}/bin"
# shellcheck source=versions.env
source "${root}/hack/versions.env"
state="${DEMO_DIR:-${root}/.demo}"
cluster="${DEMO_CLUSTER:-voiceagent-demo}"
export KWOK_WORKDIR="${state}/kwok"
kubeconfig="${state}/kubeconfig"
kubectl() { "${bin}/controlplane/kubectl" --kubeconfig "${kubeconfig}" "$@"; }
log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }

build() {
  log "building what is missing (the first run takes several minutes; later runs reuse bin/)"
  "${root}/hack/build-controlplane.sh" etcd kube-apiserver kube-controller-manager kube-scheduler kubectl
  "${root}/hack/build-kwok.sh"
  "${root}/hack/thirdparty-crds.sh"
  "${root}/hack/build-thirdparty-controllers.sh"
  (cd "${root}" && CGO_ENABLED=0 go build -o "${bin}/voiceagent-operator" ./cmd/voiceagent-operator)
}

start_bg() { # name command...
  local name="$1"; shift
  "$@" >"${state}/${name}.log" 2>&1 &
  echo $! >"${state}/${name}.pid"
}

stop_bg() {
  local pidfile="${state}/$1.pid"
  [ -f "${pidfile}" ] || return 0
  local pid; pid="$(cat "${pidfile}")"
  if kill "${pid}" 2>/dev/null; then
    for _ in $(seq 1 50); do kill -0 "${pid}" 2>/dev/null || break; sleep 0.1; done
    kill -9 "${pid}" 2>/dev/null || true
  fi
  rm -f "${pidfile}"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

up() {
  local samples=1
  [ "${1:-}" = "--no-samples" ] && samples=0
  build
  mkdir -p "${state}"
  local t0; t0=$(date +%s)
  log "creating kwok cluster ${cluster}"
  "${bin}/kwokctl" create cluster --name "${cluster}" --runtime binary \
    --etcd-binary "${bin}/controlplane/etcd" \
    --kube-apiserver-binary "${bin}/controlplane/kube-apiserver" \
    --kube-controller-manager-binary "${bin}/controlplane/kube-controller-manager" \
    --kube-scheduler-binary "${bin}/controlplane/kube-scheduler" \
    --kwok-controller-binary "${bin}/kwok" --wait 2m >"${state}/kwokctl.log" 2>&1
  "${bin}/kwokctl" get kubeconfig --name "${cluster}" >"${kubeconfig}"
  # kwok's default node has no ephemeral-storage, which every rendered container
  # requests (as real nodes have): give the simulated nodes some.
  "${bin}/kwokctl" scale node --replicas 2 --name "${cluster}" \
    --param '.allocatable["ephemeral-storage"]="100Gi"' >>"${state}/kwokctl.log" 2>&1

  log "installing CRDs: voiceagent.dev, cert-manager ${CERT_MANAGER_VERSION:-}, External Secrets"
  kubectl apply --server-side -f "${root}/config/crd/bases" >/dev/null
  kubectl apply --server-side -f "${bin}/crds/cert-manager" >/dev/null
  kubectl apply --server-side -f "${bin}/crds/external-secrets" >/dev/null
  kubectl wait --for condition=established --timeout=60s crd --all >/dev/null
  kubectl create namespace cert-manager --dry-run=client -o yaml | kubectl apply -f - >/dev/null

  log "starting the External Secrets and cert-manager controllers"
  start_bg external-secrets env KUBECONFIG="${kubeconfig}" "${bin}/external-secrets" \
    --metrics-addr="127.0.0.1:$(free_port)" --enable-leader-election=false
  start_bg cert-manager "${bin}/cert-manager-controller" --kubeconfig "${kubeconfig}" \
    --cluster-resource-namespace cert-manager
  log "starting the voiceagent-operator manager"
  start_manager

  if [ "${samples}" = 1 ]; then
    log "applying the demo: a fake secret store, CA issuers, an AuditSink, a VoiceAgent with two integrations"
    apply_with_retry "${root}/config/demo"
    wait_ready demo support-line
    report
  fi
  log "up in $(( $(date +%s) - t0 ))s; explore with: export KUBECONFIG=${kubeconfig}"
}

start_manager() {
  start_bg manager "${bin}/voiceagent-operator" manager --kubeconfig "${kubeconfig}" \
    --gateway-image voiceagent-operator:dev --metrics-bind-address 0 \
    --health-probe-bind-address "127.0.0.1:$(free_port)"
}

# apply_with_retry applies a folder until the API server accepts every object: the
# third-party controllers' CRDs may still be settling.
apply_with_retry() {
  for i in $(seq 1 30); do
    if kubectl apply --server-side -f "$1" >"${state}/apply.log" 2>&1; then return 0; fi
    sleep 1
  done
  cat "${state}/apply.log" >&2
  return 1
}

# wait_ready prints one line per condition as it turns True, and returns when the
# VoiceAgent is Ready.
wait_ready() {
  local ns="$1" name="$2" seen="" deadline=$(( $(date +%s) + ${READY_TIMEOUT:-180} ))
  while [ "$(date +%s)" -lt "${deadline}" ]; do
    local conds
    conds="$(kubectl get voiceagent -n "${ns}" "${name}" -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type}{"\n"}{end}' 2>/dev/null || true)"
    for c in ${conds}; do
      case " ${seen} " in *" ${c} "*) ;; *) seen="${seen} ${c}"; printf '   %-18s True   (%ss)\n' "${c}" "$(( $(date +%s) - deadline + ${READY_TIMEOUT:-180} ))" >&2 ;; esac
    done
    case " ${seen} " in *" Ready "*) return 0 ;; esac
    sleep 1
  done
  log "VoiceAgent ${ns}/${name} not Ready in time; its conditions:"
  kubectl get voiceagent -n "${ns}" "${name}" -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}' >&2
  return 1
}

report() {
  log "what the operator created in namespace demo"
  kubectl get voiceagents,auditsinks,deployments,pods,services,networkpolicies,poddisruptionbudgets,certificates,externalsecrets,secrets -n demo
  log "status.security of support-line (the evidence an auditor reads)"
  kubectl get voiceagent -n demo support-line -o jsonpath='{.status.security}' | python3 -m json.tool
}

down() {
  for p in manager cert-manager external-secrets; do stop_bg "${p}"; done
  if [ -x "${bin}/kwokctl" ]; then
    "${bin}/kwokctl" delete cluster --name "${cluster}" >/dev/null 2>&1 || true
  fi
  rm -rf "${state}"
  log "demo removed"
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down ;;
  start-manager) start_manager ;;
  stop-manager) stop_bg manager ;;
  env) echo "KUBECONFIG=${kubeconfig}"; echo "DEMO_DIR=${state}" ;;
  *) echo "usage: $0 up [--no-samples] | down | env" >&2; exit 2 ;;
esac
