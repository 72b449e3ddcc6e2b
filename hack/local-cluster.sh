#!/usr/bin/env bash
# A real single-node Kubernetes control plane on loopback, for end-to-end tests and `make run`
# (DESIGN §9): etcd, kube-apiserver and kube-controller-manager built by
# hack/build-control-plane.sh. No scheduler and no kubelet: Pods are created but stay Pending.
#
#   hack/local-cluster.sh up               start, print `export KUBECONFIG=...`, stay in the
#                                          foreground until SIGINT/SIGTERM, then stop everything
#   hack/local-cluster.sh exec -- CMD...   start, run CMD with KUBECONFIG set, always stop;
#                                          exits with CMD's status
#   hack/local-cluster.sh down             stop a cluster still running in the state dir
#   hack/local-cluster.sh restart [--kill] COMPONENT
#                                          stop one component of the running cluster (etcd,
#                                          kube-apiserver or kube-controller-manager; SIGTERM, or
#                                          SIGKILL with --kill) and start it again with the same
#                                          command line, ports and data; returns once it is ready
#                                          (fault tests)
#
# Options (before the subcommand) and environment:
#   --dir DIR / BYOC_CLUSTER_DIR     state dir (default: <repo>/target/local-cluster). It holds
#                                    kubeconfig (admin, system:masters), env, pki/, etcd/ and
#                                    one log file per component. Two clusters can run at once in
#                                    two state dirs: every port is picked free at start.
#   --node                           also a node (hack/node.sh): registry, containerd, kubelet,
#                                    kube-proxy, kube-scheduler; the API server then listens on
#                                    the node's address 198.19.0.1 (kubeconfig included)
#   BYOC_CONTROL_PLANE_BIN           use binaries from this dir instead of building them
#   BYOC_CLUSTER_TIMEOUT             seconds each component may take to become ready (default 120)
#
# `DIR/env` holds shell-sourceable KEY=value lines for other tools (e.g. the webhook in
# `make run`): KUBECONFIG, BYOC_APISERVER_URL, BYOC_CA_CERT, BYOC_CA_KEY, BYOC_ETCD_URL,
# BYOC_CLUSTER_DIR, KUBECACHEDIR. It exists only while the cluster runs; `exec` exports them.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
log_prefix=local-cluster
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

timeout_s=${BYOC_CLUSTER_TIMEOUT:-120}
dir=${BYOC_CLUSTER_DIR:-$repo/target/local-cluster}

# Service network of the cluster, inside 198.18.0.0/15 (never routed; the node's pods are there
# too). Without a node only its first address (the `kubernetes` Service) matters.
service_cidr=198.18.0.0/24
service_ip=198.18.0.1
node=0                  # --node
node_args=()            # extra kube-apiserver arguments from `hack/node.sh prepare`
apiserver_host=127.0.0.1
sa_issuer=https://kubernetes.default.svc.cluster.local

# Components we started, by name; filled by launch(), emptied by stop_all().
declare -A pids=()
cmd_pid=""          # the process group of CMD in `exec` mode
stopping=0
have_lock=0         # this run owns the state dir; only then may it stop or remove anything there
# Set at start-up by pick_port and the start_* functions.
etcd_port="" etcd_peer_port="" apiserver_port="" kcm_port="" etcd_url="" apiserver_url="" bin=""

# elapsed START: seconds since START (an $EPOCHREALTIME value), with one decimal.
elapsed() {
  local now=${EPOCHREALTIME/[!0-9]/} start=${1/[!0-9]/}
  local tenths=$(((10#$now - 10#$start) / 100000))
  printf '%d.%d' $((tenths / 10)) $((tenths % 10))
}

# Ports are picked free by pick_port (hack/lib.sh); a component that still loses the race for
# its port is restarted on new ports (see start_with_retry).

# ---------------------------------------------------------------------------------------------
# Processes

# launch NAME CMD...: starts a component (spawn), logging to DIR/NAME.log.
launch() {
  local name=$1; shift
  spawn "$dir/$name.log" "$@"
  pids[$name]=$!
  echo "$!" >"$dir/run/$name.pid"
}

# ours PID: PID runs and its command line names this state dir (so it is one of our components).
ours() { names_dir "$1" "$dir"; }

# current_pid NAME: the pid of NAME now: the one in run/NAME.pid (`restart` replaces it there),
# else the one we started.
current_pid() {
  local pid=""
  [[ -r $dir/run/$1.pid ]] && pid=$(<"$dir/run/$1.pid")
  [[ -n $pid ]] || pid=${pids[$1]:-}
  printf '%s' "$pid"
}

# stop NAME: stops one component we started, or its replacement started by `restart`.
stop() {
  local name=$1 pid=${pids[$1]:-} current
  current=$(current_pid "$name")
  if [[ -n $current && $current != "$pid" ]] && ours "$current"; then
    stop_pid "$current" "$name"
  fi
  [[ -n $pid ]] && stop_pid "$pid" "$name"
  unset "pids[$name]"
  rm -f "$dir/run/$name.pid"
}

# stop_all: stops CMD (exec mode), then every component, etcd last. Idempotent.
stop_all() {
  ((have_lock)) || return 0
  if [[ -n $cmd_pid ]]; then
    # CMD runs in its own process group; end the whole group (e.g. cargo and its test binaries).
    kill -TERM -- "-$cmd_pid" 2>/dev/null || true
    wait "$cmd_pid" 2>/dev/null || true
    cmd_pid=""
  fi
  [[ ${#pids[@]} -gt 0 ]] && log "stopping control plane"
  # In node mode: the node's processes first (the API server waits for its clients' watches to
  # end), then the API server, then the node's network. The API server listens on the bridge
  # address and talks to itself there while it stops: with the bridge gone first, that address
  # would be routed off the machine, and it waited 20 s for an answer that never came.
  if [[ -d $dir/node ]]; then "$here/node.sh" --dir "$dir" halt || log "the node did not stop cleanly"; fi
  stop kube-controller-manager
  stop kube-apiserver
  if [[ -d $dir/node ]]; then "$here/node.sh" --dir "$dir" stop || log "the node did not stop cleanly"; fi
  stop etcd
  # What describes a running cluster goes away with it; logs and certificates stay for debugging.
  rm -rf "$dir/etcd" "$dir/env" "$dir/kubeconfig" "$dir/run"
}

# stop_stale: stops components that a previous, killed run left behind in this state dir, in
# stop_all's order.
stop_stale() {
  if [[ -d $dir/node ]]; then "$here/node.sh" --dir "$dir" halt; fi
  stop_leftover kube-controller-manager
  stop_leftover kube-apiserver
  if [[ -d $dir/node ]]; then "$here/node.sh" --dir "$dir" stop; fi
  stop_leftover etcd
}

# stop_leftover NAME: stops NAME of a previous run. Its pid is only trusted if the process's
# command line names this state dir.
stop_leftover() {
  local name=$1 pid
  [[ -e $dir/run/$name.pid ]] || return 0
  pid=$(<"$dir/run/$name.pid")
  if ours "$pid"; then
    log "stopping $name ($pid) left over from a previous run"
    stop_pid "$pid" "$name"
  fi
}

# on_signal SIG: stops everything and exits. SIGPIPE (a write to stdout or stderr after the
# reader went away) stops the cluster as SIGINT does; from here on such writes fail with EPIPE
# instead of killing this script before it has stopped its components.
on_signal() {
  local sig=$1 code
  trap '' PIPE
  ((stopping)) && return 0
  stopping=1
  log "received SIG$sig"
  stop_all
  case $mode:$sig in
    up:INT | up:TERM) code=0 ;;
    *:INT) code=130 ;;
    *:PIPE) code=141 ;;
    *) code=143 ;;
  esac
  trap - EXIT
  exit "$code"
}

on_exit() {
  local code=$?
  trap '' PIPE
  stop_all
  exit "$code"
}

# ---------------------------------------------------------------------------------------------
# Certificates and kubeconfigs

make_pki() {
  local pki=$dir/pki
  mkdir -p "$pki"
  chmod 700 "$pki"
  # Cluster CA: trusted for serving and client certificates alike.
  new_ca "$pki/ca" byoc-local-ca 365
  sign "$pki/ca" "$pki/apiserver" "/CN=kube-apiserver" 365 "extendedKeyUsage = serverAuth" \
    "subjectAltName = IP:127.0.0.1,DNS:localhost,IP:$service_ip,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  # The admin is in system:masters; the controller manager uses its bootstrap RBAC identity.
  sign "$pki/ca" "$pki/admin" "/O=system:masters/CN=byoc-admin" 365 "extendedKeyUsage = clientAuth"
  sign "$pki/ca" "$pki/kube-controller-manager" "/CN=system:kube-controller-manager" 365 \
    "extendedKeyUsage = clientAuth"

  # Service-account token signing key pair (RS256, as kubeadm does).
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key" 2>/dev/null
  openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub"
}

# ---------------------------------------------------------------------------------------------
# Start-up

# failed NAME WHY: reports a component that did not start or stopped, with the end of its log,
# and exits.
failed() { fail "$dir/$1.log" "$1 $2"; }

# start_with_retry NAME START_FN CHECK...: runs START_FN (which picks ports and calls launch),
# waits for CHECK. A component that exits because its port was taken meanwhile is restarted on
# new ports (up to 3 times); any other failure is fatal.
start_with_retry() {
  local name=$1 start_fn=$2 attempt rc; shift 2
  for attempt in 1 2 3; do
    "$start_fn"
    rc=0
    wait_until "${pids[$name]}" "$@" || rc=$?
    case $rc in
      0) return 0 ;;
      2) failed "$name" "was not ready after ${timeout_s}s" ;;
    esac
    wait "${pids[$name]}" 2>/dev/null || true
    unset "pids[$name]"
    if ((attempt < 3)) && tail -n 20 "$dir/$name.log" | grep -q 'address already in use'; then
      log "$name lost its port to another process; retrying on new ports"
      continue
    fi
    failed "$name" "exited during start-up"
  done
}

start_etcd() {
  pick_port etcd_port
  pick_port etcd_peer_port
  etcd_url=http://127.0.0.1:$etcd_port
  local peer=http://127.0.0.1:$etcd_peer_port
  rm -rf "$dir/etcd"
  # --unsafe-no-fsync: a throw-away test cluster needs no durability, and fsync dominates its cost.
  launch etcd "$bin/etcd" \
    --name=local --data-dir="$dir/etcd" \
    --listen-client-urls="$etcd_url" --advertise-client-urls="$etcd_url" \
    --listen-peer-urls="$peer" --initial-advertise-peer-urls="$peer" \
    --initial-cluster="local=$peer" --initial-cluster-state=new \
    --unsafe-no-fsync --log-level=warn
}
# GET /health over bash's /dev/tcp (HTTP/1.0: etcd closes the connection after the reply).
etcd_healthy() {
  local reply
  reply=$(
    exec 3<>"/dev/tcp/127.0.0.1/$etcd_port"
    printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    timeout 2 cat <&3
  ) || return 1
  [[ $reply == *'"health":"true"'* ]]
}

start_apiserver() {
  local pki=$dir/pki
  pick_port apiserver_port
  apiserver_url=https://$apiserver_host:$apiserver_port
  write_kubeconfig "$dir/kubeconfig" "$apiserver_url" "$pki/ca" admin "$pki/admin"
  write_kubeconfig "$dir/kube-controller-manager.kubeconfig" "$apiserver_url" "$pki/ca" \
    kube-controller-manager "$pki/kube-controller-manager"
  # Default admission plugins are kept: they include NamespaceLifecycle, ServiceAccount,
  # MutatingAdmissionWebhook, ValidatingAdmissionWebhook and ValidatingAdmissionPolicy.
  # --endpoint-reconciler-type=none: a loopback address is not a valid Endpoints address.
  # --allow-privileged=true, as kubeadm and managed clusters set it: there Pod Security admission
  # on the namespace, not this flag, refuses privileged pods (tests/e2e/tests/node.rs shows it).
  # ImageVolume (beta, off by default in 1.33): pods may mount an image as a volume, which the
  # policy checks like a container image; without the gate the API server drops
  # `volumes[].image`. kube-controller-manager needs no gate: it copies pod templates whole.
  launch kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers="$etcd_url" \
    --bind-address=127.0.0.1 --secure-port="$apiserver_port" --advertise-address=127.0.0.1 \
    --cert-dir="$pki" \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --authorization-mode=RBAC \
    --service-account-issuer="$sa_issuer" \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range="$service_cidr" \
    --endpoint-reconciler-type=none \
    --allow-privileged=true \
    --feature-gates=ImageVolume=true \
    --profiling=false "${node_args[@]}"
}
apiserver_ready() {
  [[ $(kubectl --kubeconfig "$dir/kubeconfig" --request-timeout=5s get --raw=/readyz) == ok ]]
}

start_controller_manager() {
  local pki=$dir/pki
  pick_port kcm_port
  # Per-controller service-account credentials, as in a real cluster, so RBAC applies to them.
  # The default client rate limit (20 QPS) makes starting the ~40 controllers, each fetching its
  # token, take seconds; a local cluster can afford more.
  launch kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig="$dir/kube-controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$kcm_port" --cert-dir="$pki/kube-controller-manager" \
    --service-account-private-key-file="$pki/sa.key" \
    --root-ca-file="$pki/ca.crt" \
    --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
    --use-service-account-credentials=true \
    --flex-volume-plugin-dir="$dir/flexvolume" \
    --leader-elect=false \
    --kube-api-qps=200 --kube-api-burst=400 \
    --profiling=false
}
# The service-account controller has created `default` in `default` (etcd starts empty, so only
# this controller manager can have done it): the controllers run.
default_sa_exists() {
  kubectl --kubeconfig "$dir/kubeconfig" --request-timeout=5s -n default get serviceaccount default
}

write_env() {
  {
    printf 'KUBECONFIG=%q\n' "$dir/kubeconfig"
    printf 'BYOC_APISERVER_URL=%q\n' "$apiserver_url"
    printf 'BYOC_CA_CERT=%q\n' "$dir/pki/ca.crt"
    printf 'BYOC_CA_KEY=%q\n' "$dir/pki/ca.key"
    printf 'BYOC_ETCD_URL=%q\n' "$etcd_url"
    printf 'BYOC_CLUSTER_DIR=%q\n' "$dir"
    printf 'KUBECACHEDIR=%q\n' "$KUBECACHEDIR"
  } >"$dir/env.tmp"
  mv "$dir/env.tmp" "$dir/env"
}

# lock: one cluster per state dir. The lock is held on fd 9 by this script and its short-lived
# helpers only (components and CMD are started with fd 9 closed), so it is released when this
# script dies, however it dies.
lock() {
  mkdir -p "$dir"
  exec 9>"$dir/.lock"
  # A crashed script's last child (a sleep of its wait loop) may hold the lock a moment longer.
  if ! flock -w 10 9; then
    die "a cluster is already running in $dir (script pid $(cat "$dir/owner.pid" 2>/dev/null || echo '?')); stop it with '$0 down' or use another --dir"
  fi
  have_lock=1
  echo "$$" >"$dir/owner.pid"
}

start_cluster() {
  for tool in openssl kubectl flock setsid timeout; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required but not on PATH"
  done
  if [[ -n ${BYOC_CONTROL_PLANE_BIN:-} ]]; then
    bin=$BYOC_CONTROL_PLANE_BIN
  else
    bin=$("$here/build-control-plane.sh")
  fi
  for b in etcd kube-apiserver kube-controller-manager; do
    [[ -x $bin/$b ]] || die "$bin/$b is missing; run hack/build-control-plane.sh"
  done

  lock
  # kubectl's discovery cache is keyed by host:port; keep it with this cluster instead of
  # leaving one directory per random port in ~/.kube/cache.
  export KUBECACHEDIR=$dir/kubectl-cache
  stop_stale
  rm -rf "$dir/etcd" "$dir/pki" "$dir/run" "$dir/env" "$dir/kubeconfig" "$dir/flexvolume" \
    "$dir/kubectl-cache" "$dir/kube-controller-manager.kubeconfig" "$dir"/*.log
  mkdir -p "$dir/run"

  local t0=$EPOCHREALTIME
  log "starting control plane in $dir"
  make_pki
  if ((node)); then
    local out
    out=$(BYOC_SERVICE_IP=$service_ip "$here/node.sh" --dir "$dir" prepare)
    mapfile -t node_args <<<"$out"
    apiserver_host=$(sed -n 's/^--bind-address=//p' <<<"$out")
  fi
  start_with_retry etcd start_etcd etcd_healthy
  log "etcd ready after $(elapsed "$t0")s"
  start_with_retry kube-apiserver start_apiserver apiserver_ready
  log "kube-apiserver ready after $(elapsed "$t0")s"
  start_with_retry kube-controller-manager start_controller_manager default_sa_exists
  if ((node)); then "$here/node.sh" --dir "$dir" start "$apiserver_url"; fi
  write_env
  log "ready after $(elapsed "$t0")s: API server $apiserver_url, etcd $etcd_url, logs in $dir"
}

# ---------------------------------------------------------------------------------------------
# Subcommands

cmd_up() {
  start_cluster
  echo "export KUBECONFIG=$dir/kubeconfig"
  log "press Ctrl-C to stop"
  # Wait until a signal (handled by on_signal) or until a component dies.
  # Poll rather than `wait -n`: a component replaced by `restart` is no child of this script.
  local name
  while true; do
    for name in "${!pids[@]}"; do
      [[ -e $dir/run/$name.restarting ]] && continue
      running "$(current_pid "$name")" || failed "$name" "exited unexpectedly"
    done
    sleep 1 &
    wait $! || true
  done
}

cmd_exec() {
  [[ $# -gt 0 ]] || usage
  start_cluster
  export KUBECONFIG=$dir/kubeconfig
  set -a
  # shellcheck source=/dev/null
  source "$dir/env"
  set +a
  log "running: $*"
  # CMD gets its own process group so that stop_all can end all of it; stdin stays usable.
  setsid "$@" <&0 9>&- &
  cmd_pid=$!
  local status=0
  wait "$cmd_pid" || status=$?
  # Anything CMD left running in its group is ended too.
  kill -TERM -- "-$cmd_pid" 2>/dev/null || true
  cmd_pid=""
  log "command exited with status $status"
  exit "$status"
}

cmd_down() {
  mkdir -p "$dir"
  exec 9>"$dir/.lock"
  # A crashed script's last child (a sleep of its wait loop) may hold the lock a moment longer.
  if ! flock -w 10 9; then
    local owner
    owner=$(cat "$dir/owner.pid" 2>/dev/null || true)
    [[ $owner =~ ^[0-9]+$ ]] || die "$dir is locked but owner.pid is unreadable"
    log "stopping the cluster run by pid $owner"
    kill -TERM "$owner"
    flock -w 60 9 || die "pid $owner did not stop within 60s"
  fi
  stop_stale
  rm -rf "$dir/etcd" "$dir/env" "$dir/kubeconfig" "$dir/run"
  log "stopped"
}

# restart [--kill] NAME: replaces one component of the cluster that another run of this script
# owns, keeping its command line (ports, data dir, certificates) and log.
cmd_restart() {
  local signal=TERM name pid args=() rc=0
  if [[ ${1:-} == --kill ]]; then signal=KILL; shift; fi
  [[ $# -eq 1 ]] || usage
  name=$1
  case $name in etcd | kube-apiserver | kube-controller-manager) ;; *) usage ;; esac
  exec 9>"$dir/.lock"
  flock -n 9 && die "no cluster is running in $dir"
  [[ -r $dir/env ]] || die "the cluster in $dir is still starting"
  # shellcheck source=/dev/null
  source "$dir/env"
  etcd_port=${BYOC_ETCD_URL##*:}
  pid=$(current_pid "$name")
  ours "$pid" || die "$name is not running in $dir"
  mapfile -d '' args <"/proc/$pid/cmdline"
  : >"$dir/run/$name.restarting"
  log "restarting $name ($pid, SIG$signal)"
  printf '=== %s: restart (SIG%s)\n' "$(date -u +%FT%TZ)" "$signal" >>"$dir/$name.log"
  if [[ $signal == KILL ]]; then
    kill -KILL "$pid" 2>/dev/null || true
    while running "$pid"; do sleep 0.05; done
  else
    stop_pid "$pid" "$name"
  fi
  # A killed process's threads may hold its listening sockets for a moment after it is gone:
  # a replacement that finds its port still taken is started again.
  local attempt
  for attempt in $(seq 1 50); do
    spawn "$dir/$name.log" "${args[@]}"
    pids[$name]=$!
    echo "$!" >"$dir/run/$name.pid"
    rc=0
    case $name in
      etcd) wait_until "${pids[$name]}" etcd_healthy || rc=$? ;;
      kube-apiserver) wait_until "${pids[$name]}" apiserver_ready || rc=$? ;;
      kube-controller-manager) sleep 1; running "${pids[$name]}" || rc=1 ;;
    esac
    ((rc == 1)) && tail -n 5 "$dir/$name.log" | grep -q 'address already in use' || break
    wait "${pids[$name]}" 2>/dev/null || true
    sleep 0.2
  done
  rm -f "$dir/run/$name.restarting"
  ((rc == 0)) || failed "$name" "did not come back after the restart"
  log "$name restarted (${pids[$name]})"
}

mode=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --dir) [[ $# -ge 2 ]] || usage; dir=$2; shift 2 ;;
    --dir=*) dir=${1#--dir=}; shift ;;
    --node) node=1; shift ;;
    -h | --help) usage 0 ;;
    up | down) mode=$1; shift; [[ $# -eq 0 ]] || usage; break ;;
    restart) mode=restart; shift; break ;;
    exec) mode="exec"; shift; [[ ${1:-} == -- ]] && shift; break ;;
    *) usage ;;
  esac
done
[[ -n $mode ]] || usage
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

case $mode in
  down) cmd_down ;;
  restart) cmd_restart "$@" ;;
  up | exec)
    trap 'on_signal INT' INT
    trap 'on_signal TERM' TERM
    # Trapped rather than ignored, so the components and CMD keep the default SIGPIPE.
    trap 'on_signal PIPE' PIPE
    trap on_exit EXIT
    if [[ $mode == up ]]; then cmd_up; else cmd_exec "$@"; fi
    ;;
esac
