#!/usr/bin/env bash
# The node of the local cluster (hack/local-cluster.sh --node): a local image registry,
# containerd + runc + the CNI bridge from Debian packages, and kubelet, kube-proxy and
# kube-scheduler built by hack/build-control-plane.sh. Nothing a pod sends can leave the machine:
# pods live on a bridge with no uplink, there is no MASQUERADE/SNAT for them, and FORWARD drops
# anything between the bridge and any other interface. Packets for 198.18.0.0/15 leave only by
# loopback or an interface of this project (mangle POSTROUTING drops the rest).
#
#   hack/node.sh --dir DIR prepare      before kube-apiserver starts: removes what a crashed run
#                                       left, creates the bridge and the firewall rules, signs
#                                       the node's certificates; prints the extra kube-apiserver
#                                       arguments, one per line
#   hack/node.sh --dir DIR start URL    once the control plane at URL is ready: starts the
#                                       registry, containerd, kubelet, kube-proxy and
#                                       kube-scheduler; returns when the node is Ready
#   hack/node.sh --dir DIR halt         stops the node's processes (daemons, containers,
#                                       registry) and leaves its network, for the API server
#                                       that listens on the bridge to stop before it goes
#   hack/node.sh --dir DIR stop         stops and removes everything the node started
#                                       (processes, mounts, bridge, iptables rules, network
#                                       namespaces, cgroups, sysctls); idempotent
#   hack/node.sh --dir DIR leftovers    prints what of a node is still on this machine; exits 1
#                                       when anything is
#   hack/node.sh install                installs the Debian packages the node needs (apt-get)
#   hack/node.sh can-run                exits 0 when this machine can run the node's containers
#                                       (root, cgroups, mount namespaces, bridge netfilter),
#                                       else says why on stderr and exits 1
#
# DIR is the cluster's state dir; the node keeps its state in DIR/node and logs in DIR/node-*.log.
# Addresses (all inside 198.18.0.0/15, which is reserved for benchmarks and never routed):
#   pods 198.19.0.0/24 on bridge byoc0 (the node is 198.19.0.1), services 198.18.0.0/24 (set by
#   hack/local-cluster.sh), registry 127.0.0.1:5000, and the same registry read-only for pods at
#   198.19.0.1:5000 (a second docker-registry on the same storage, on the bridge address only:
#   what the webhook's registry lookups reach from its pod).
# Registry mirrors: an image pushed to 127.0.0.1:5000 as P is pulled as P from
# docker-registry.tools.wmflabs.org, quay.io and ghcr.io, and from 127.0.0.1:5000 and
# 198.19.0.1:5000 themselves (containerd always pulls over loopback, from 127.0.0.1:5000).
# One node runs per machine (the bridge, the registry port and the iptables chains are global).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log_prefix=node
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

bridge=byoc0
node_ip=198.19.0.1
pod_cidr=198.19.0.0/24
node_name=byoc-node
registry=127.0.0.1:5000
# The registry as pods reach it: read-only, on the node's bridge address.
pod_registry=$node_ip:5000
mirrored=(docker-registry.tools.wmflabs.org quay.io ghcr.io "$registry" "$pod_registry")
# The pause image: hack/build-images.sh pushes it to the local registry at start.
pause_path=toolforge/byoc-operator/pause:1
pause_image=docker-registry.tools.wmflabs.org/$pause_path
cgroup_root=byoc-node
chain=BYOC-NODE
# Packets to or from the cluster's ranges (by their connection's original addresses too) that would
# leave by an interface this project did not make (the bridge, a test's veth: all named byoc*), say
# through the default route: dropped instead. In mangle POSTROUTING, where the interface is the real
# one (after kube-proxy's DNAT).
out_chain=BYOC-NODE-OUT
# Machine-wide: which state dir owns the node now, and the sysctls to restore at stop.
global=/run/byoc-node
# Sysctls kubelet (vm.*, kernel.*) and the bridge (ip_forward) change; restored at stop.
sysctls=(net.ipv4.ip_forward vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
packages=(containerd runc containernetworking-plugins iptables conntrack docker-registry skopeo)
timeout_s=${BYOC_CLUSTER_TIMEOUT:-120}

# ---------------------------------------------------------------------------------------------
# Packages

# missing_packages: the Debian packages of the node that are not installed.
missing_packages() {
  local p
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || printf '%s\n' "$p"
  done
}

cmd_install() {
  local missing
  mapfile -t missing < <(missing_packages)
  ((${#missing[@]} == 0)) && return 0
  command -v apt-get >/dev/null 2>&1 || die "missing packages ${missing[*]} and no apt-get to install them"
  log "installing ${missing[*]} (apt-get)"
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >&2 ||
    die "could not install ${missing[*]}"
  # The packages' own services are not used: the node starts its daemons with its own config.
  local unit
  for unit in containerd docker-registry; do
    command -v systemctl >/dev/null 2>&1 && systemctl is-active -q "$unit" 2>/dev/null &&
      systemctl disable --now -q "$unit" 2>/dev/null || true
  done
}

# can_run_containers: root, cgroups, and the tools; prints why not on stderr.
can_run_containers() {
  ((EUID == 0)) || { log "not root"; return 1; }
  [[ -d /sys/fs/cgroup/pids || -f /sys/fs/cgroup/cgroup.controllers ]] || { log "no cgroup file system"; return 1; }
  [[ -f /proc/sys/net/bridge/bridge-nf-call-iptables ]] || modprobe br_netfilter 2>/dev/null ||
    { log "no br_netfilter (bridged traffic would bypass iptables)"; return 1; }
  unshare --mount --propagation private true 2>/dev/null || { log "cannot create a mount namespace"; return 1; }
}

# ---------------------------------------------------------------------------------------------
# Processes

# launch NAME CMD...: starts CMD (spawn), logging to DIR/node-NAME.log.
launch() {
  local name=$1; shift
  spawn "$dir/node-$name.log" "$@"
  echo "$!" >"$nd/run/$name.pid"
}

# in_ns CMD...: CMD in the node's private mount namespace.
in_ns() { nsenter --mount="/proc/$(<"$nd/run/ns.pid")/ns/mnt" -- "$@"; }

# node_pids: every process the node started: the daemons launch recorded (their command lines
# name DIR/node/), what runs in its private mount namespace (containerd, its shims, kubelet)
# and what runs in its cgroups (the containers). Never a process found by its name or
# command line alone: a stranger is never ended.
node_pids() {
  local p mntns="" f
  for f in "$nd"/run/*.pid; do
    [[ -r $f ]] && p=$(<"$f") && names_dir "$p" "$nd" && echo "$p"
  done
  [[ -r $nd/run/mntns ]] && mntns=$(<"$nd/run/mntns")
  if [[ -n $mntns ]]; then
    for p in /proc/[0-9]*; do
      p=${p#/proc/}
      ((p == $$ || p == BASHPID)) && continue
      [[ $(readlink "/proc/$p/ns/mnt" 2>/dev/null) == "$mntns" ]] && echo "$p"
    done
  fi
  for f in /sys/fs/cgroup/*/"$cgroup_root"; do
    [[ -d $f ]] && find "$f" -name cgroup.procs -exec cat {} + 2>/dev/null
  done
  true
}

# naming_pids: processes whose command line names DIR/node/ (for leftovers, never ended).
naming_pids() {
  local p
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    ((p == $$ || p == BASHPID)) && continue
    { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | grep -qF -- "$nd/" && echo "$p"
  done
  true
}

# stop_name NAME: SIGTERM to a daemon started by launch, SIGKILL after 10 s.
stop_name() {
  local name=$1 pid
  [[ -r $nd/run/$name.pid ]] || return 0
  pid=$(<"$nd/run/$name.pid")
  if names_dir "$pid" "$nd"; then stop_pid "$pid" "$name" 10; fi
  rm -f "$nd/run/$name.pid"
}

# ---------------------------------------------------------------------------------------------
# Clean-up: everything the node can leave on the machine

ipt() { iptables -w 5 "$@"; }

remove_firewall() {
  local jump
  for jump in "FORWARD $chain" "POSTROUTING $out_chain"; do
    ipt -t mangle -D "${jump% *}" -j "${jump#* }" 2>/dev/null || true
    ipt -t mangle -F "${jump#* }" 2>/dev/null || true
    ipt -t mangle -X "${jump#* }" 2>/dev/null || true
  done
  local bin
  bin=$(cat "$nd/bin" 2>/dev/null || true)
  # (The whole output is read before grep decides: with pipefail, `grep -q` closing the pipe
  # early would make the test fail.)
  if [[ $(iptables-save 2>/dev/null; ip6tables-save 2>/dev/null) == *KUBE-* ]]; then
    # kube-proxy removes its own chains (both families); anything it misses goes by name below.
    [[ -x $bin/kube-proxy ]] && "$bin/kube-proxy" --cleanup --proxy-mode=iptables >>"$dir/node-kube-proxy.log" 2>&1 || true
    remove_kube_chains iptables
    remove_kube_chains ip6tables
  fi
}

# remove_kube_chains CMD: every KUBE-* chain, and every jump to one, from CMD (iptables or
# ip6tables). Jumps are deleted by chain and rule number (last first), so no rule text is ever
# parsed or evaluated by the shell.
remove_kube_chains() {
  local cmd=$1 table chains c chain n
  command -v "$cmd" >/dev/null || return 0
  for table in filter nat mangle; do
    mapfile -t chains < <("$cmd" -w 5 -t "$table" -S 2>/dev/null | sed -n 's/^-N \(KUBE-[A-Za-z0-9-]*\)$/\1/p')
    ((${#chains[@]} == 0)) && continue
    while read -r chain; do
      while read -r n; do
        "$cmd" -w 5 -t "$table" -D "$chain" "$n" 2>/dev/null || true
      done < <("$cmd" -w 5 -t "$table" -L "$chain" -n --line-numbers 2>/dev/null |
        awk 'NR > 2 && $2 ~ /^KUBE-/ {print $1}' | sort -rn)
    done < <("$cmd" -w 5 -t "$table" -S 2>/dev/null | sed -n 's/^-[PN] \([^ ]*\).*$/\1/p' | grep -v '^KUBE-')
    for c in "${chains[@]}"; do "$cmd" -w 5 -t "$table" -F "$c" 2>/dev/null || true; done
    for c in "${chains[@]}"; do "$cmd" -w 5 -t "$table" -X "$c" 2>/dev/null || true; done
  done
}

remove_cgroups() {
  local f
  for f in /sys/fs/cgroup/*/"$cgroup_root"; do
    [[ -d $f ]] && find "$f" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  true
}

restore_sysctls() {
  [[ -r $global/sysctl ]] || return 0
  local key value
  while read -r key value; do
    sysctl -qw "$key=$value" 2>/dev/null || log "could not restore $key=$value"
  done <"$global/sysctl"
  rm -f "$global/sysctl"
}

# cmd_halt: stops every process of the node (daemons, containers, registry); leaves its network.
cmd_halt() {
  local pids=() i name
  for name in kube-scheduler kubelet kube-proxy; do stop_name "$name"; done
  # Containers, then containerd and its shims, then the namespace holder, then the registry.
  for i in $(seq 1 50); do
    mapfile -t pids < <(node_pids | sort -u)
    ((${#pids[@]} == 0)) && break
    ((i == 1)) && stop_name containerd
    kill -KILL "${pids[@]}" 2>/dev/null || true
    sleep 0.1
  done
  ((${#pids[@]} == 0)) || log "processes still running: ${pids[*]}"
}

cmd_stop() {
  cmd_halt
  remove_firewall
  ip link del "$bridge" 2>/dev/null || true
  remove_cgroups
  restore_sysctls
  if [[ -r $global/owner && $(<"$global/owner") == "$dir" ]]; then rm -rf "$global"; fi
  rm -rf "$nd/run"
}

# cmd_leftovers: what of a node is still on the machine, one line each.
cmd_leftovers() {
  local found=0 line
  report() { printf '%s\n' "$*"; found=1; }
  while read -r line; do report "process $line: $(tr '\0' ' ' <"/proc/$line/cmdline" 2>/dev/null)"; done < <({ node_pids; naming_pids; } | sort -u)
  while read -r line; do report "mount: $line"; done < <(grep -F -- "$nd/" /proc/self/mountinfo || true)
  while read -r line; do report "network namespace mount: $line"; done < <(awk '$9 == "nsfs" && $5 ~ /netns/' /proc/self/mountinfo)
  ip link show "$bridge" >/dev/null 2>&1 && report "bridge $bridge"
  while read -r line; do report "iptables: $line"; done < <(iptables-save 2>/dev/null | grep -E "KUBE-|$chain|$bridge|198\.1[89]\." || true)
  while read -r line; do report "ip6tables: $line"; done < <(ip6tables-save 2>/dev/null | grep -E "KUBE-|$chain|$bridge" || true)
  for line in /sys/fs/cgroup/*/"$cgroup_root"; do [[ -e $line ]] && report "cgroup $line"; done
  [[ -e $global ]] && report "state $global"
  ((found == 0))
}

# ---------------------------------------------------------------------------------------------
# prepare

# sign_node NAME SUBJECT EXTENSION...: pki/node/NAME.{key,crt}, signed by the cluster CA.
sign_node() {
  local name=$1 subject=$2
  shift 2
  sign "$dir/pki/ca" "$dir/pki/node/$name" "$subject" 365 "$@"
}

cmd_prepare() {
  can_run_containers || die "this machine cannot run containers (see above)"
  local m
  m=$(missing_packages | tr '\n' ' ')
  [[ -z $m ]] || die "missing Debian packages: $m(run 'hack/node.sh install')"
  [[ -r $dir/pki/ca.key ]] || die "$dir/pki/ca.key is missing: prepare runs after the cluster CA is made"
  mkdir -p "$global"
  if [[ -r $global/owner ]]; then
    local other
    other=$(<"$global/owner")
    if [[ $other != "$dir" ]] && [[ -e $other/.lock ]] && ! flock -n "$other/.lock" true; then
      die "a node cluster already runs in $other; one node runs per machine (stop it with 'hack/local-cluster.sh --dir $other down')"
    fi
    [[ $other != "$dir" ]] && dir=$other nd=$other/node cmd_stop
    mkdir -p "$global"
  fi
  cmd_stop
  ss -Hltn "sport = :${registry##*:}" | grep -q . && die "port ${registry##*:} is taken: the node's registry listens on $registry"
  mkdir -p "$global"
  echo "$dir" >"$global/owner"
  local key
  for key in "${sysctls[@]}"; do printf '%s %s\n' "$key" "$(sysctl -n "$key")"; done >"$global/sysctl"

  rm -rf "$nd"
  mkdir -p "$nd/run" "$dir/pki/node"

  ip link add "$bridge" type bridge
  # IPv4 only: no link-local address, no router advertisements, nothing IPv6 to forward.
  if [[ -e /proc/sys/net/ipv6/conf/$bridge/disable_ipv6 ]]; then sysctl -qw "net.ipv6.conf.$bridge.disable_ipv6=1"; fi
  ip addr add "$node_ip/${pod_cidr#*/}" dev "$bridge"
  ip link set "$bridge" up
  sysctl -qw net.ipv4.ip_forward=1
  # Nothing between the pod bridge and any other interface, either way. In mangle FORWARD, which
  # runs before the filter table, where kube-proxy's own FORWARD rules accept established and
  # masquerade-marked traffic.
  ipt -t mangle -N "$chain"
  ipt -t mangle -A "$chain" -i "$bridge" ! -o "$bridge" -j DROP
  ipt -t mangle -A "$chain" ! -i "$bridge" -o "$bridge" -j DROP
  ipt -t mangle -I FORWARD 1 -j "$chain"
  # Whatever the destination became (kube-proxy may DNAT to any address an EndpointSlice names),
  # a connection to or from the cluster's ranges leaves only by loopback or byoc*.
  ipt -t mangle -N "$out_chain"
  ipt -t mangle -A "$out_chain" -o lo -j RETURN
  ipt -t mangle -A "$out_chain" -o byoc+ -j RETURN
  ipt -t mangle -A "$out_chain" -d 198.18.0.0/15 -j DROP
  ipt -t mangle -A "$out_chain" -m conntrack --ctorigdst 198.18.0.0/15 -j DROP
  ipt -t mangle -A "$out_chain" -m conntrack --ctorigsrc 198.18.0.0/15 -j DROP
  ipt -t mangle -I POSTROUTING 1 -j "$out_chain"

  local client="extendedKeyUsage = clientAuth"
  sign_node kubelet "/O=system:nodes/CN=system:node:$node_name" "$client"
  sign_node kube-proxy "/CN=system:kube-proxy" "$client"
  sign_node kube-scheduler "/CN=system:kube-scheduler" "$client"
  # kube-apiserver -> kubelet (logs, exec): an admin, as kubeadm's apiserver-kubelet-client is.
  sign_node apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
  sign_node apiserver "/CN=kube-apiserver" "extendedKeyUsage = serverAuth" \
    "subjectAltName = IP:$node_ip,IP:127.0.0.1,DNS:localhost,IP:$service_ip,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"

  # The extra kube-apiserver arguments (later arguments win over earlier ones).
  printf '%s\n' \
    "--bind-address=$node_ip" "--advertise-address=$node_ip" \
    "--endpoint-reconciler-type=lease" \
    "--tls-cert-file=$dir/pki/node/apiserver.crt" "--tls-private-key-file=$dir/pki/node/apiserver.key" \
    "--enable-admission-plugins=NodeRestriction" \
    "--kubelet-client-certificate=$dir/pki/node/apiserver-kubelet-client.crt" \
    "--kubelet-client-key=$dir/pki/node/apiserver-kubelet-client.key" \
    "--kubelet-preferred-address-types=InternalIP"
}

# ---------------------------------------------------------------------------------------------
# start

# kubeconfig USER: DIR/node/USER.kubeconfig for the certificate pki/node/USER.
kubeconfig() {
  write_kubeconfig "$nd/$1.kubeconfig" "$apiserver_url" "$dir/pki/ca" "$1" "$dir/pki/node/$1"
}

# wait_for NAME WHAT CHECK...: waits until CHECK succeeds; fails with NAME's log if its process
# exits or the timeout passes.
wait_for() {
  local name=$1 what=$2
  shift 2
  wait_until "$(<"$nd/run/$name.pid")" "$@" || fail "$dir/node-$name.log" "$name: $what did not happen"
}

start_registry() {
  mkdir -p "$nd/registry"
  cat >"$nd/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $nd/registry}
  delete: {enabled: true}
http:
  addr: $registry
EOF
  launch registry docker-registry serve "$nd/registry.yml"
  wait_for registry "listening on $registry" curl -fsS --max-time 1 "http://$registry/v2/"
  # The same storage for pods, read-only (no upload, no purge): the webhook looks up there what
  # containerd pulls from $registry.
  cat >"$nd/registry-pods.yml" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $nd/registry}
  maintenance:
    readonly: {enabled: true}
    uploadpurging: {enabled: false}
http:
  addr: $pod_registry
EOF
  launch registry-pods docker-registry serve "$nd/registry-pods.yml"
  wait_for registry-pods "listening on $pod_registry" curl -fsS --max-time 1 "http://$pod_registry/v2/"
  log "pushing the pause image ($pause_path)"
  "$here/build-images.sh" --images pause --push "$registry" >/dev/null ||
    die "could not build and push the pause image"
}

start_containerd() {
  local host
  mkdir -p "$nd/ns/run" "$nd/ns/var-lib" "$nd/ns/var-log" "$nd/cni" "$nd/containerd" "$nd/certs.d"
  for host in "${mirrored[@]}"; do
    mkdir -p "$nd/certs.d/$host"
    # `server` is the local registry too: a miss never falls back to the real one.
    cat >"$nd/certs.d/$host/hosts.toml" <<EOF
server = "http://$registry"

[host."http://$registry"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
EOF
  done
  cat >"$nd/cni/10-byoc.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "byoc",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$nd/cni-ipam",
        "ranges": [[{"subnet": "$pod_cidr", "gateway": "$node_ip"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF
  cat >"$nd/containerd.toml" <<EOF
version = 2
root = "$nd/containerd/root"
state = "$nd/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "$nd/containerd.sock"

[ttrpc]
  address = "$nd/containerd.sock.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  # Root here lacks CAP_SYS_RESOURCE: never ask runc for an oom_score_adj below containerd's.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$nd/cni"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$nd/certs.d"
EOF
  # The namespace holder: a private mount namespace in which /run, /var/lib and /var/log are
  # the node's own directories, so what containerd and kubelet write there (and every mount
  # they make) stays in DIR/node and disappears with the namespace.
  launch ns unshare --mount --propagation private -- bash -c '
    mount --bind "$1/ns/run" /run && mount --bind "$1/ns/var-lib" /var/lib &&
      mount --bind "$1/ns/var-log" /var/log && touch "$1/run/ns.ready" && exec sleep infinity' \
    byoc-node-ns "$nd"
  wait_for ns "the mount namespace" test -e "$nd/run/ns.ready"
  readlink "/proc/$(<"$nd/run/ns.pid")/ns/mnt" >"$nd/run/mntns"
  # A registry without a mirror here (docker.io, registry.k8s.io, ...) would be pulled from the
  # internet: every pull that is not for this machine goes to a proxy that is not there.
  launch containerd env HTTP_PROXY=http://127.0.0.1:1 HTTPS_PROXY=http://127.0.0.1:1 \
    NO_PROXY=127.0.0.1,localhost nsenter --mount="/proc/$(<"$nd/run/ns.pid")/ns/mnt" -- \
    containerd --config "$nd/containerd.toml"
  wait_for containerd "serving CRI on $nd/containerd.sock" test -S "$nd/containerd.sock"
}

start_kubelet() {
  local port healthz
  # The kubelet's identity gets the node role (the API server authorizes with RBAC only).
  kubectl --kubeconfig "$dir/kubeconfig" create clusterrolebinding byoc-node --clusterrole=system:node \
    --group=system:nodes --dry-run=client -o yaml | kubectl --kubeconfig "$dir/kubeconfig" apply -f - >/dev/null
  pick_port port
  pick_port healthz
  kubeconfig kubelet
  mkdir -p "$nd/kubelet-pki" "$nd/volume-plugins"
  local c
  for c in /sys/fs/cgroup/*/; do
    [[ -e $c/cgroup.procs && ! -L ${c%/} ]] && mkdir -p "$c$cgroup_root"
  done
  cat >"$nd/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $node_ip
port: $port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $dir/pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$nd/containerd.sock
cgroupDriver: cgroupfs
cgroupRoot: /$cgroup_root
failSwapOn: false
failCgroupV1: false
makeIPTablesUtilChains: false
volumePluginDir: $nd/volume-plugins
resolvConf: ""
clusterDomain: cluster.local
# A busy CI disk must not evict the operator's pods.
evictionHard: {memory.available: 50Mi, nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
serializeImagePulls: false
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusReportFrequency: 10s
EOF
  launch kubelet nsenter --mount="/proc/$(<"$nd/run/ns.pid")/ns/mnt" -- "$bin/kubelet" \
    --config="$nd/kubelet.yaml" --kubeconfig="$nd/kubelet.kubeconfig" \
    --cert-dir="$nd/kubelet-pki" --hostname-override="$node_name" --node-ip="$node_ip" \
    --v=1
}

start_kube_proxy() {
  local healthz metrics
  pick_port healthz
  pick_port metrics
  kubeconfig kube-proxy
  launch kube-proxy "$bin/kube-proxy" \
    --kubeconfig="$nd/kube-proxy.kubeconfig" --hostname-override="$node_name" \
    --proxy-mode=iptables --cluster-cidr="$pod_cidr" \
    --nodeport-addresses="$node_ip/32" --iptables-localhost-nodeports=false \
    --bind-address="$node_ip" \
    --healthz-bind-address="127.0.0.1:$healthz" --metrics-bind-address="127.0.0.1:$metrics" \
    --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0 \
    --v=1
}

start_scheduler() {
  local port
  pick_port port
  kubeconfig kube-scheduler
  launch kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig="$nd/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$nd/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$nd/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$port" --leader-elect=false
}

node_ready() {
  [[ $(kubectl --kubeconfig "$dir/kubeconfig" --request-timeout=5s get node "$node_name" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

cmd_start() {
  apiserver_url=$1
  [[ -d $nd/run ]] || die "run 'hack/node.sh --dir $dir prepare' first"
  bin=$("$here/build-control-plane.sh")
  echo "$bin" >"$nd/bin"
  local t0=$SECONDS
  start_registry
  start_containerd
  start_kubelet
  start_kube_proxy
  start_scheduler
  wait_for kubelet "node $node_name Ready" node_ready
  log "node $node_name Ready after $((SECONDS - t0))s (pods $pod_cidr on $bridge, registry $registry, for pods $pod_registry)"
}

# ---------------------------------------------------------------------------------------------

dir=${BYOC_CLUSTER_DIR:-}
while [[ $# -gt 0 ]]; do
  case $1 in
    --dir) [[ $# -ge 2 ]] || usage; dir=$2; shift 2 ;;
    --dir=*) dir=${1#--dir=}; shift ;;
    -h | --help) usage 0 ;;
    *) break ;;
  esac
done
[[ $# -gt 0 ]] || usage
cmd=$1; shift
case $cmd in
  install) cmd_install; exit 0 ;;
  can-run) can_run_containers; exit ;;
esac
[[ -n $dir ]] || usage
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
nd=$dir/node
service_ip=${BYOC_SERVICE_IP:-198.18.0.1}
case $cmd in
  prepare) [[ $# -eq 0 ]] || usage; cmd_prepare ;;
  start) [[ $# -eq 1 ]] || usage; cmd_start "$1" ;;
  halt) [[ $# -eq 0 ]] || usage; cmd_halt ;;
  stop) [[ $# -eq 0 ]] || usage; cmd_stop ;;
  leftovers) [[ $# -eq 0 ]] || usage; cmd_leftovers ;;
  *) usage ;;
esac
