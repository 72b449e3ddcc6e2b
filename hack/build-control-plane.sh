#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, and for the node kube-scheduler, kubelet and
# kube-proxy (and helm) from Go modules with the machine's Go toolchain. Binaries are cached outside the repo, keyed by version, so only the first
# run pays for the build. Prints the bin directory on stdout; progress goes to stderr.
#
#   hack/build-control-plane.sh            # build what is missing, print the bin dir
#
# Environment: BYOC_CACHE_DIR (default ${XDG_CACHE_HOME:-$HOME/.cache}/byoc-operator).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache=${BYOC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/byoc-operator}
bin="$cache/bin/k8s-$KUBERNETES_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION"
work="$cache/build"

log() { printf '[build-control-plane] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v go >/dev/null 2>&1 || die "Go is not installed (need go >= 1.24 on PATH): see README 'Set-up'."

# A staging version is v0.<minor>.<patch> for Kubernetes v1.<minor>.<patch>.
staging_version="v0.${KUBERNETES_VERSION#v1.}"

export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0

need=()
kube_bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
for b in etcd "${kube_bins[@]}" helm; do
  [ -x "$bin/$b" ] || need+=("$b")
done
if [ ${#need[@]} -eq 0 ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$bin" "$work"
log "building ${need[*]} into $bin (first run only; this takes a while on 2 cores)"

# go_get MODULE@VERSION: fails with a clear message when the module proxy cannot be reached.
go_get() {
  go get "$@" >&2 || die "could not fetch $* from the Go module proxy ($(go env GOPROXY)); check network access to it."
}

# init_module DIR NAME: a fresh wrapper module in DIR.
init_module() {
  rm -rf "$1" && mkdir -p "$1"
  printf 'module byoc.local/%s\n\ngo 1.24\n' "$2" >"$1/go.mod"
}

build_kube() {
  local dir="$work/kubernetes-$KUBERNETES_VERSION"
  init_module "$dir" kubernetes
  cd "$dir"
  log "resolving k8s.io/kubernetes@$KUBERNETES_VERSION and its staging modules at $staging_version"
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  [ -f "$gomod" ] || die "could not download k8s.io/kubernetes@$KUBERNETES_VERSION from the Go module proxy."
  # k8s.io/kubernetes replaces every staging module with ./staging/src/k8s.io/NAME; pin each one.
  local mods
  mods=$(sed -n 's|^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*|\1|p' "$gomod")
  [ -n "$mods" ] || die "found no staging modules in $gomod"
  for m in $mods; do
    go mod edit -replace "$m=$m@$staging_version"
  done
  go_get "k8s.io/kubernetes@$KUBERNETES_VERSION"
  local minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  for b in "${kube_bins[@]}"; do
    [ -x "$bin/$b" ] && continue
    log "compiling $b $KUBERNETES_VERSION"
    go build -trimpath -ldflags "$ldflags" -o "$bin/$b.tmp" "k8s.io/kubernetes/cmd/$b" >&2
    mv "$bin/$b.tmp" "$bin/$b"
  done
}

build_etcd() {
  local dir="$work/etcd-$ETCD_VERSION"
  init_module "$dir" etcd
  cd "$dir"
  log "compiling etcd $ETCD_VERSION"
  go_get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  go build -trimpath -ldflags "-s -w" -o "$bin/etcd.tmp" go.etcd.io/etcd/server/v3 >&2
  mv "$bin/etcd.tmp" "$bin/etcd"
}

build_helm() {
  local dir="$work/helm-$HELM_VERSION"
  init_module "$dir" helm
  cd "$dir"
  log "compiling helm $HELM_VERSION"
  go_get "helm.sh/helm/v3@$HELM_VERSION"
  go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" -o "$bin/helm.tmp" helm.sh/helm/v3/cmd/helm >&2
  mv "$bin/helm.tmp" "$bin/helm"
}

start=$(date +%s)
[ -x "$bin/etcd" ] || build_etcd
for b in "${kube_bins[@]}"; do
  [ -x "$bin/$b" ] || { build_kube; break; }
done
[ -x "$bin/helm" ] || build_helm
log "done in $(( $(date +%s) - start ))s"
echo "$bin"
