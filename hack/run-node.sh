#!/usr/bin/env bash
# `make run` on a machine that can run containers (hack/run.sh dispatches here): the product as
# its users run it. Builds the images (hack/build-images.sh), starts the local cluster with a node
# (hack/local-cluster.sh --node; kubeconfig at target/local-cluster/kubeconfig), pushes the
# images to the node's registry, installs charts/byoc-operator with `helm install` into
# byoc-system, creates a sample tool namespace and grant, prints what to try once the webhook and
# controller pods are Ready, and stays in the foreground. Ctrl-C removes everything (the
# cluster, the node, its registry, bridge and firewall rules).
#
# Environment:
#   BYOC_MODE          policy mode: enforce (default), warn or audit
#   BYOC_CLUSTER_DIR   the cluster's state dir (default target/local-cluster)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
log_prefix=run
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
mode=${BYOC_MODE:-enforce}
system_ns=byoc-system
release=byoc-operator
sample_ns=tool-demo
registry=127.0.0.1:5000
# What build-images.sh pushes; the registry mirrors serve it under every mirrored registry.
test_path=toolforge/byoc-operator/test:1

case $mode in enforce | warn | audit) ;; *) die "BYOC_MODE must be enforce, warn or audit, not '$mode'" ;; esac

# ---------------------------------------------------------------------------------------------
# Outside the cluster: packages and images, then the cluster around a second run of this script.

if [[ -z ${BYOC_RUN_NODE_INSIDE:-} ]]; then
  export BYOC_RUN_STARTED=${BYOC_RUN_STARTED:-$(date +%s)}
  for tool in cargo kubectl go; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required but not on PATH"
  done
  "$here/node.sh" install
  log "building the images (hack/build-images.sh; the first run compiles the release binaries)"
  "$here/build-images.sh" >/dev/null
  export BYOC_RUN_NODE_INSIDE=1
  exec "$here/local-cluster.sh" --node exec -- "${BASH_SOURCE[0]}"
fi

# ---------------------------------------------------------------------------------------------
# Inside: KUBECONFIG and the cluster's env are set by hack/local-cluster.sh.

helm=$("$here/build-control-plane.sh")/helm

log "pushing the images to the node's registry $registry"
declare -A repo_of=() digest_of=()
while read -r name repository _tag digest; do
  repo_of[$name]=$repository
  digest_of[$name]=$digest
done < <("$here/build-images.sh" --push "$registry")
for name in byoc-controller byoc-webhook; do
  [[ -n ${digest_of[$name]:-} ]] || die "hack/build-images.sh pushed no $name image"
done

# The API server runs on the host and reaches the pods from the node's address on the pod
# bridge, the host of its URL; the NetworkPolicy lets only that address reach the webhook (the
# node's bridge CNI does not enforce NetworkPolicies, but the chart needs the value).
apiserver_host=${BYOC_APISERVER_URL#https://}
apiserver_host=${apiserver_host%:*}

# The chart's default repositories are ghcr.io/toolforge/byoc-operator/...; ghcr.io is mirrored
# to the local registry, so only the digests (the images just built) are set.
log "helm install $release charts/byoc-operator into $system_ns"
"$helm" install "$release" "$repo/charts/byoc-operator" --namespace "$system_ns" --create-namespace \
  --set "policy.mode=$mode" \
  --set "networkPolicy.apiServerCIDRs={$apiserver_host/32}" \
  --set reports.enabled=true --set reports.installCRD=true \
  --set "controller.image.digest=${digest_of[byoc-controller]}" \
  --set "webhook.image.digest=${digest_of[byoc-webhook]}" \
  --wait --timeout 5m >/dev/null ||
  { kubectl -n "$system_ns" get pods -o wide >&2; die "helm install did not become ready"; }

log "creating the sample tool namespace $sample_ns and its grant"
apply_sample_grant "$sample_ns" "make run sample: images under quay.io/toolforge" quay.io/toolforge
kubectl wait --for=condition=Ready --timeout=60s "byocgrant/$sample_ns" >/dev/null ||
  log "warning: the grant $sample_ns is not Ready after 60s; see 'kubectl -n $system_ns logs deploy/$release-controller'"

cat <<EOF

byoc-operator is running (policy mode: $mode), installed by Helm as pods on the node,
$(($(date +%s) - ${BYOC_RUN_STARTED:-$(date +%s)}))s after the start. In another terminal:

  export KUBECONFIG=$KUBECONFIG
  kubectl get nodes
  kubectl -n $system_ns get pods

Images pushed to the local registry $registry as PATH are pulled as
docker-registry.tools.wmflabs.org/PATH, quay.io/PATH and ghcr.io/PATH; nothing else can be pulled.
Try:

  # the platform registry is always allowed: the pod runs
  kubectl -n $sample_ns run ok --image=docker-registry.tools.wmflabs.org/$test_path
  # Docker Hub is refused, naming the container, the image, its registry and how to get a grant
  kubectl -n $sample_ns run hub --image=nginx
  # the sample grant lets quay.io/toolforge in (the pod runs), and nothing else
  kubectl get byoc
  kubectl -n $sample_ns run granted --image=quay.io/$test_path
  kubectl -n $sample_ns run other --image=ghcr.io/$test_path
  # revoke it: the same image is refused again (pods already running are left alone)
  kubectl delete byoc $sample_ns
  kubectl -n $sample_ns run granted2 --image=quay.io/$test_path
  # the grant labels belong to the controller, even an admin cannot set them
  kubectl label namespace $sample_ns byoc.toolforge.org/any=never
  # the inventory: one PolicyReport per namespace, one result per workload or bare pod; the
  # pod the revoked grant let in keeps running and now fails, naming the rule it breaks
  kubectl get policyreport -A
  kubectl -n $sample_ns get policyreport byoc-registry-policy -o yaml
  # every image in use, its registry and the grant that allows it (or REFUSED)
  kubectl byoc images -A

Logs: kubectl -n $system_ns logs deploy/$release-webhook (and -controller); the
node's daemons log to ${BYOC_CLUSTER_DIR:-$repo/target/local-cluster}/node-*.log.

Press Ctrl-C to stop (the cluster and everything the node started are removed).
EOF

# Stay in the foreground; hack/local-cluster.sh stops this script and the cluster on Ctrl-C.
while true; do
  sleep 3600 &
  wait $! || true
done
