#!/usr/bin/env bash
# `make run`: the whole product on one machine (DESIGN §9).
#
# With KUBECONFIG unset, starts the local control plane (hack/local-cluster.sh; kubeconfig at
# target/local-cluster/kubeconfig) and stops it on exit. With KUBECONFIG set, uses that cluster,
# which must be one whose API server runs on this machine (e.g. `hack/local-cluster.sh up`):
# the webhook is registered at https://127.0.0.1:PORT. For any other cluster it stops before
# changing anything and points to the Helm chart.
#
# Then: builds the binaries, applies the CRD and hack/manifests/, starts the webhook and the
# controller (each with a token of its own service account), registers the
# ValidatingWebhookConfiguration, creates a sample tool namespace and grant, prints what to try,
# and stays in the foreground. Ctrl-C (SIGINT/SIGTERM) stops everything it started and removes
# the webhook registration, so a cluster that outlives this script is never blocked by it.
#
# With KUBECONFIG unset on a machine that can run containers, hack/run-node.sh runs the product
# as pods on a local node instead (images, `helm install`); BYOC_RUN=host forces what follows.
#
# Environment:
#   BYOC_RUN       node (pods on a local node), host (host processes) or unset (node if possible)
#   BYOC_MODE      policy mode: enforce (default), warn or audit
#   BYOC_RUN_DIR   state: certificates, kubeconfigs, policy file, logs (default target/run)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
log_prefix=run
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
state=${BYOC_RUN_DIR:-$repo/target/run}
bin=${CARGO_TARGET_DIR:-$repo/target}/debug
mode=${BYOC_MODE:-enforce}
system_ns=byoc-system
# The registry policy leaves these alone; the webhook configuration (the chart's, release
# namespace byoc-system) excludes the same ones by name.
exempt=(kube-system kube-public kube-node-lease "$system_ns")
webhook_name=byoc-webhook
sample_ns="tool-demo"
timeout_s=60   # how long the webhook and the controller may take to become ready

case $mode in enforce | warn | audit) ;; *) die "BYOC_MODE must be enforce, warn or audit, not '$mode'" ;; esac
case ${BYOC_RUN:-} in
  "" | node) if [[ -z ${KUBECONFIG:-} ]] && "$here/node.sh" can-run; then exec "$here/run-node.sh"; fi
    [[ -z ${BYOC_RUN:-} ]] || die "BYOC_RUN=node, but this machine cannot run containers (see above)"
    [[ -n ${KUBECONFIG:-} ]] || log "this machine cannot run containers: running the operator as host processes" ;;
  host) ;;
  *) die "BYOC_RUN must be node or host, not '$BYOC_RUN'" ;;
esac

# ---------------------------------------------------------------------------------------------
# Outside the cluster: build, then start the local control plane around a second run of this
# script (hack/local-cluster.sh stops this script's process group, then the cluster, on Ctrl-C).

if [[ -z ${BYOC_RUN_BUILT:-} ]]; then
  for tool in cargo kubectl openssl curl ss; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required but not on PATH"
  done
  log "building the binaries (cargo build --bins)"
  (cd "$repo" && cargo build --bins)
  export BYOC_RUN_BUILT=1
fi

if [[ -z ${KUBECONFIG:-} ]]; then
  log "KUBECONFIG is not set: starting a local control plane (hack/local-cluster.sh)"
  exec "$here/local-cluster.sh" exec -- "${BASH_SOURCE[0]}"
fi

# ---------------------------------------------------------------------------------------------
# The cluster must be able to call https://127.0.0.1: its API server must run here.

server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
[[ -n $server ]] || die "KUBECONFIG=$KUBECONFIG has no server for its current context"

# api_server_is_local URL: the URL is on loopback and a kube-apiserver process of this machine
# listens there (a loopback port forwarded into a VM or container, as with kind, does not count).
api_server_is_local() {
  local hostport=${1#*://} host port
  hostport=${hostport%%/*}
  port=${hostport##*:}
  host=${hostport%:*}
  case $host in 127.0.0.1 | localhost | "[::1]") ;; *) return 1 ;; esac
  [[ $port =~ ^[0-9]+$ ]] || return 1
  ss -Hltnp "sport = :$port" 2>/dev/null | grep -q '"kube-apiserver"'
}

if ! api_server_is_local "$server"; then
  cat >&2 <<EOF
[run] KUBECONFIG=$KUBECONFIG points at $server,
[run] an API server that does not run on this machine. It could not reach a webhook served
[run] at https://127.0.0.1, and registering one (failurePolicy: Fail) would block pod creation
[run] in every tool namespace. Nothing was changed in that cluster.
[run]
[run] - to try byoc-operator locally: unset KUBECONFIG and run 'make run' again;
[run] - to install it on this cluster: use the Helm chart in charts/byoc-operator.
EOF
  exit 1
fi

# ---------------------------------------------------------------------------------------------
# Processes started here, stopped on exit

declare -A pids=()
registered=0
cleaned=0
webhook_port="" webhook_admin="" controller_admin=""

# start NAME KUBECONFIG CMD...: runs CMD in the background with its own kubeconfig, logging to
# STATE/NAME.log.
start() {
  local name=$1 kubeconfig=$2
  shift 2
  KUBECONFIG=$kubeconfig "$@" </dev/null >"$state/$name.log" 2>&1 &
  pids[$name]=$!
}

# wait_ready NAME URL: waits until URL answers 200, or fails if NAME exits or timeout_s pass.
wait_ready() {
  local name=$1 url=$2 rc=0
  wait_until "${pids[$name]}" curl -fsS --max-time 1 "$url" || rc=$?
  case $rc in
    1) fail "$state/$name.log" "$name exited during start-up" ;;
    2) fail "$state/$name.log" "$name was not ready after ${timeout_s}s ($url)" ;;
  esac
}

# shellcheck disable=SC2317 # called from traps
cleanup() {
  ((cleaned)) && return 0
  cleaned=1
  # Without its process the webhook registration would refuse every pod: remove it first.
  if ((registered)); then
    kubectl delete validatingwebhookconfiguration "$webhook_name" --ignore-not-found \
      --request-timeout=5s >/dev/null 2>&1 || log "could not remove ValidatingWebhookConfiguration $webhook_name"
  fi
  local name pid i
  for name in "${!pids[@]}"; do kill -TERM "${pids[$name]}" 2>/dev/null || true; done
  for name in "${!pids[@]}"; do
    pid=${pids[$name]}
    for i in $(seq 1 100); do
      running "$pid" || break
      ((i == 100)) && { log "$name did not stop after 20s; killing it"; kill -KILL "$pid" 2>/dev/null || true; }
      sleep 0.2
    done
    wait "$pid" 2>/dev/null || true
  done
  ((${#pids[@]} == 0)) || log "stopped the webhook and the controller"
  pids=()
}

# on_signal SIG: SIGPIPE (stdout or stderr lost its reader) stops everything as SIGINT does;
# from here on such writes fail with EPIPE instead of killing this script mid-cleanup.
# shellcheck disable=SC2317 # called from traps
on_signal() {
  trap '' PIPE
  log "received SIG$1; stopping"
  cleanup
  trap - EXIT
  exit 0
}
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
# Trapped rather than ignored, so the processes started here keep the default SIGPIPE.
trap 'on_signal PIPE' PIPE
trap 'trap "" PIPE; cleanup' EXIT

# ---------------------------------------------------------------------------------------------
# The cluster side

# Private before any secret is written in it (an existing dir is made so first).
mkdir -p -m 700 "$state"
chmod 700 "$state"
rm -f "$state"/*.log

log "applying the CRDs (ours and PolicyReport) and hack/manifests/ to $server"
kubectl apply --server-side --force-conflicts --field-manager=byoc-run \
  -f "$repo/crds/" -f "$repo/charts/byoc-operator/files/policyreports.yaml" \
  -f "$here/manifests/" >/dev/null
kubectl wait --for=condition=Established --timeout=60s \
  crd/byocgrants.byoc.toolforge.org crd/byocrequests.byoc.toolforge.org >/dev/null

# A CA and a serving certificate for 127.0.0.1, new each run.
log "generating the webhook's serving certificate"
pki=$state/pki
rm -rf "$pki"
mkdir -p "$pki"
new_ca "$pki/ca" byoc-run-webhook-ca 7
sign "$pki/ca" "$pki/tls" "/CN=byoc-webhook" 7 "extendedKeyUsage = serverAuth" \
  "subjectAltName = IP:127.0.0.1,DNS:localhost"

# token_kubeconfig SERVICE_ACCOUNT FILE: a kubeconfig for the current cluster that authenticates
# with a token of SERVICE_ACCOUNT in byoc-system, so the process has exactly that identity (for
# the controller: the configured label writer).
# Mode 600 from the start (write_private).
token_kubeconfig() {
  local sa=$1 file=$2 token ca_data ca_file
  token=$(kubectl -n "$system_ns" create token "$sa" --duration=24h)
  ca_data=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
  ca_file=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')
  {
    echo "apiVersion: v1"
    echo "kind: Config"
    echo "clusters:"
    echo "- name: cluster"
    echo "  cluster:"
    echo "    server: $server"
    if [[ -n $ca_data ]]; then echo "    certificate-authority-data: $ca_data"; fi
    if [[ -n $ca_file ]]; then echo "    certificate-authority: $ca_file"; fi
    echo "users:"
    echo "- name: $sa"
    echo "  user:"
    echo "    token: $token"
    echo "contexts:"
    echo "- name: $sa"
    echo "  context: {cluster: cluster, user: $sa}"
    echo "current-context: $sa"
  } | write_private "$file"
}
token_kubeconfig byoc-webhook "$state/webhook.kubeconfig"
token_kubeconfig byoc-controller "$state/controller.kubeconfig"

exempt_yaml=$(printf '%s, ' "${exempt[@]}")
exempt_yaml="[${exempt_yaml%, }]"
cat >"$state/policy.yaml" <<EOF
# Written by hack/run.sh; the policy configuration of the webhook and the controller (its
# expiry reminders and PolicyReports; byoc-policy Config).
mode: $mode
defaultRegistries: [docker-registry.tools.wmflabs.org]
exemptNamespaces: $exempt_yaml
labelWriters: [system:serviceaccount:$system_ns:byoc-controller]
expiryWarning: 14d
EOF

pick_port webhook_port
pick_port webhook_admin
pick_port controller_admin

log "starting the webhook (https://127.0.0.1:$webhook_port, admin http://127.0.0.1:$webhook_admin)"
start webhook "$state/webhook.kubeconfig" "$bin/byoc-webhook" \
  --config "$state/policy.yaml" \
  --listen "127.0.0.1:$webhook_port" --admin-addr "127.0.0.1:$webhook_admin" \
  --tls-cert "$pki/tls.crt" --tls-key "$pki/tls.key"
log "starting the controller (admin http://127.0.0.1:$controller_admin)"
start controller "$state/controller.kubeconfig" "$bin/byoc-controller" \
  --admin-addr "127.0.0.1:$controller_admin" --reports --config "$state/policy.yaml"
wait_ready webhook "http://127.0.0.1:$webhook_admin/readyz"
wait_ready controller "http://127.0.0.1:$controller_admin/readyz"

log "registering ValidatingWebhookConfiguration $webhook_name"
# Rendered from the Helm chart's template: the same webhooks, rules and conditions as a Helm
# install, pointed at https://127.0.0.1:PORT.
registration=$("$here/webhook-registration.sh" --name "$webhook_name" \
  --url "https://127.0.0.1:$webhook_port" --ca-file "$pki/ca.crt")
registered=1
kubectl apply -f - >/dev/null <<<"$registration"

log "creating the sample tool namespace $sample_ns and its grant"
apply_sample_grant "$sample_ns" "make run sample: runs the upstream Prometheus node exporter image" \
  quay.io/prometheus
labelled=0
for _ in $(seq 1 100); do
  if kubectl get namespace "$sample_ns" -o jsonpath='{.metadata.labels}' | grep -q 'byoc.toolforge.org/'; then
    labelled=1
    break
  fi
  sleep 0.2
done
((labelled)) || log "warning: the controller has not labelled $sample_ns after 20s; see $state/controller.log"

cat <<EOF

byoc-operator is running (policy mode: $mode). In another terminal:

  export KUBECONFIG=$KUBECONFIG

There is no kubelet: admitted pods are created and stay Pending. Try:

  # the platform registry is always allowed
  kubectl -n $sample_ns run ok --image=docker-registry.tools.wmflabs.org/toolforge-python311:latest
  # Docker Hub is refused, naming the container, the image, its registry and how to get a grant
  kubectl -n $sample_ns run hub --image=nginx
  # the sample grant lets quay.io/prometheus in, and nothing else
  kubectl get byoc
  kubectl -n $sample_ns run exporter --image=quay.io/prometheus/node-exporter:v1.8.2
  kubectl -n $sample_ns run other --image=quay.io/jetstack/cert-manager-controller:v1.15.0
  # revoke it: the same image is refused again (pods already created are left alone)
  kubectl delete byoc $sample_ns
  kubectl -n $sample_ns run exporter2 --image=quay.io/prometheus/node-exporter:v1.8.2
  # a Deployment is refused at apply time, not when its pods are made
  kubectl -n $sample_ns create deployment web --image=nginx
  # the grant labels belong to the controller, even an admin cannot set them
  kubectl label namespace $sample_ns byoc.toolforge.org/any=never
  # the inventory: one PolicyReport per namespace, one result per workload or bare pod; the
  # pods the revoked grant let in now fail, naming the rule they break
  kubectl get policyreport -A
  kubectl -n $sample_ns get policyreport byoc-registry-policy -o yaml
  # every image in use, its registry and the grant that allows it (or REFUSED)
  kubectl byoc images -A

Webhook:    https://127.0.0.1:$webhook_port/validate, metrics http://127.0.0.1:$webhook_admin/metrics
Controller: metrics http://127.0.0.1:$controller_admin/metrics
Logs:       $state/webhook.log, $state/controller.log

Press Ctrl-C to stop.
EOF

# Stay in the foreground until a signal (handled above) or until a process dies.
status=0
wait -n "${pids[@]}" || status=$?
for name in "${!pids[@]}"; do
  running "${pids[$name]}" || fail "$state/$name.log" "$name exited unexpectedly (status $status); stopping"
done
exit 1
