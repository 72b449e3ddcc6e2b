#!/usr/bin/env bash
# Builds the project's container images without Docker, as OCI archives, and optionally pushes
# them to a registry. The same layout as the Dockerfile (checked by tests/e2e/tests/images.rs);
# docs/images.md says how a release uses either.
#
#   hack/build-images.sh [--push REGISTRY] [--insecure] [--tag TAG] [--prefix PATH]
#                        [--images NAME,...] [--binaries DIR] [--out DIR]
#
# Images (NAME: what, repository path, tag):
#   byoc-controller  /usr/local/bin/byoc-controller on the Debian base   PREFIX/byoc-controller:TAG
#   byoc-webhook     /usr/local/bin/byoc-webhook on the Debian base      PREFIX/byoc-webhook:TAG
#   pause            kubelet's sandbox image: /pause (hack/images/pause.c, static), user 65535
#                                                                        PREFIX/pause:1
#   test             busybox-static (/bin/sh, /bin/sleep, ... ) and /bin/pause as its default
#                    command: stays Running, exits at once on SIGTERM; user 65532
#                                                                        PREFIX/test:1
# The Debian base: libc6, libgcc-s1 and ca-certificates of this machine's Debian release
# (`apt-get download`, `dpkg-deb -x`; the release the binaries were built against),
# /etc/ssl/certs/ca-certificates.crt, /etc/passwd and /etc/group with root, nobody and nonroot
# (65532), /tmp, /home/nonroot. The byoc images run as 65532:65532 with the Dockerfile's
# ENTRYPOINT, EXPOSE and labels.
#
# Options:
#   --push REGISTRY  push every built image to REGISTRY (host[:port]) as REGISTRY/PATH:TAG with
#                    skopeo; credentials as skopeo finds them (`skopeo login`, REGISTRY_AUTH_FILE).
#                    A loopback registry (127.x, localhost, [::1]) is spoken to over plain HTTP;
#                    --insecure does that (no TLS verification) for any other.
#   --tag TAG        tag of byoc-controller and byoc-webhook (default: the chart's appVersion).
#   --prefix PATH    repository path prefix (default toolforge/byoc-operator, so the chart's
#                    default repositories ghcr.io/toolforge/byoc-operator/... name them).
#   --images LIST    comma-separated subset of the names above (default: all four).
#   --binaries DIR   take byoc-controller and byoc-webhook from DIR instead of running
#                    `cargo build --release --locked -p byoc-controller -p byoc-webhook --bins`
#                    and using $CARGO_TARGET_DIR/release.
#   --out DIR        where the archives go (default $CARGO_TARGET_DIR/images).
#
# Outputs: DIR/NAME.tar, an OCI archive (skopeo's `oci-archive:` transport) per image, holding
# the one tag PATH:TAG; DIR/oci, the OCI layout they come from (the cache). On stdout, one line
# per image and nothing else:
#   NAME REPOSITORY TAG DIGEST
# e.g. `byoc-webhook 127.0.0.1:5000/toolforge/byoc-operator/byoc-webhook 0.1.0 sha256:...`;
# REPOSITORY starts with REGISTRY/ only with --push. The reference is REPOSITORY:TAG@DIGEST.
# Progress goes to stderr. Exit 1 with a message on any failure.
#
# Deterministic: every file time, the image creation time and the history times are
# SOURCE_DATE_EPOCH (default 0), so the same inputs give the same digests. Cached: an image is
# rebuilt only when its inputs (this script, the .debs, the binaries, pause.c, the tag, the
# compiler) changed; a warm run only checks and pushes (skopeo skips blobs the registry has).
#
# Environment: CARGO_TARGET_DIR (default <repo>/target); BYOC_CACHE_DIR (default
# ${XDG_CACHE_HOME:-$HOME/.cache}/byoc-operator; the .debs are kept in its debs/);
# SOURCE_DATE_EPOCH. Needs dpkg-deb, apt-get, gcc with a static libc, and skopeo and umoci,
# which it installs with apt-get when missing (as root).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
cache=${BYOC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/byoc-operator}
epoch=${SOURCE_DATE_EPOCH:-0}

log() { printf '[build-images] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" >&2; exit 2; }

registry="" insecure=false tag="" prefix=toolforge/byoc-operator binaries="" out=""
images=byoc-controller,byoc-webhook,pause,test
while [[ $# -gt 0 ]]; do
  case $1 in
    --push) registry=${2:?--push needs a registry}; shift 2 ;;
    --insecure) insecure=true; shift ;;
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    --prefix) prefix=${2:?--prefix needs a path}; shift 2 ;;
    --images) images=${2:?--images needs a list}; shift 2 ;;
    --binaries) binaries=${2:?--binaries needs a directory}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    -h | --help) usage ;;
    *) log "unknown argument: $1"; usage ;;
  esac
done
[[ -n $tag ]] || tag=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$repo/charts/byoc-operator/Chart.yaml")
[[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "--tag '$tag' is not a valid image tag"
[[ $prefix =~ ^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$ ]] ||
  die "--prefix '$prefix' is not a repository path (lowercase components separated by /)"
[[ -z $registry || $registry =~ ^[A-Za-z0-9.-]+(:[0-9]+)?$|^\[[0-9a-fA-F:]+\](:[0-9]+)?$ ]] ||
  die "--push '$registry' is not a registry host[:port]"
[[ $epoch =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH '$epoch' is not a number of seconds"
out=${out:-$target/images}
declare -A wanted=()
IFS=, read -r -a list <<<"$images"
for name in "${list[@]}"; do
  case $name in
    byoc-controller | byoc-webhook | pause | test) wanted[$name]=1 ;;
    *) die "--images: unknown image '$name' (known: byoc-controller, byoc-webhook, pause, test)" ;;
  esac
done
[[ ${#wanted[@]} -gt 0 ]] || die "--images names no image"

created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
# The Dockerfile's labels, user and ports (tests/e2e/tests/images.rs compares them).
source_label=org.opencontainers.image.source=https://github.com/toolforge/byoc-operator
license_label=org.opencontainers.image.licenses=Apache-2.0
declare -A description=(
  [byoc-controller]="Turns ByocGrants into byoc.toolforge.org/ namespace labels"
  [byoc-webhook]="Validating admission webhook enforcing the byoc registry policy"
)
declare -A ports=([byoc-controller]="8080" [byoc-webhook]="8443 8080")
base_packages=(libc6 libgcc-s1 ca-certificates)
test_packages=(busybox-static) # build_test takes exactly these

# ---------------------------------------------------------------------------------------------
# Tools

need_tools() {
  local missing=() t
  for t in skopeo umoci; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    [[ $(id -u) == 0 ]] || die "${missing[*]} missing: apt-get install ${missing[*]} (as root)"
    log "installing ${missing[*]} with apt-get"
    local install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}")
    "${install[@]}" >&2 || { apt-get update -q >&2 && "${install[@]}" >&2; } ||
      die "apt-get install ${missing[*]} failed"
  fi
  for t in dpkg-deb apt-get gcc sha256sum; do
    command -v "$t" >/dev/null 2>&1 || die "$t is missing"
  done
}

# debs PACKAGE...: downloads the .debs of this machine's Debian release into the cache (once
# per version, checked against the archive's SHA-256) and prints their paths.
debs() {
  local dir=$cache/debs uris uri file size sum pkg version
  mkdir -p "$dir"
  if ! uris=$(apt-get download --print-uris "$@" 2>/dev/null) || [[ -z $uris ]]; then
    [[ $(id -u) == 0 ]] || die "apt-get cannot locate $* (run apt-get update as root)"
    log "apt-get update (the package lists do not name $*)"
    apt-get update -q >&2 || die "apt-get update failed"
    uris=$(apt-get download --print-uris "$@") || die "apt-get cannot locate $*"
  fi
  # One line per package: 'URI' FILE SIZE SHA256:HEX, FILE being PACKAGE_VERSION_ARCH.deb.
  while read -r uri file size sum; do
    [[ $file =~ ^([^_]+)_([^_]+)_[^_]+\.deb$ && $sum == SHA256:* ]] || die "apt-get printed an unexpected line: $uri $file $size $sum"
    pkg=${BASH_REMATCH[1]} version=${BASH_REMATCH[2]//%3a/:}
    if [[ ! -f $dir/$file || $(sha256sum <"$dir/$file") != "${sum#SHA256:}  -" ]]; then
      log "downloading $file"
      (cd "$dir" && apt-get download -q -o APT::Sandbox::User=root "$pkg=$version" >&2) || die "could not download $pkg=$version"
      [[ $(sha256sum <"$dir/$file") == "${sum#SHA256:}  -" ]] || die "$file does not match its SHA-256 ${sum#SHA256:}"
    fi
    echo "$dir/$file"
  done <<<"$uris"
}

# ---------------------------------------------------------------------------------------------
# Root filesystems (staged in $work, every time set to the epoch)

fix_times() { find "$1" -exec touch -h -d "@$epoch" {} +; }

users() { # users ROOTFS: /etc/passwd, /etc/group, /tmp, /root, /home/nonroot
  local r=$1
  mkdir -p "$r/etc" "$r/tmp" "$r/root" "$r/home/nonroot"
  cat >"$r/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
  cat >"$r/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
  chmod 0644 "$r/etc/passwd" "$r/etc/group"
  chmod 1777 "$r/tmp"
  chmod 0700 "$r/root" "$r/home/nonroot"
  chown 65532:65532 "$r/home/nonroot"
}

base_rootfs() { # base_rootfs ROOTFS DEB...
  local r=$1 deb name
  shift
  rm -rf "$r" && mkdir -p "$r/var/lib/dpkg/status.d"
  for deb in "$@"; do
    dpkg-deb -x "$deb" "$r"
    name=$(dpkg-deb -f "$deb" Package)
    # What scanners read to know the packages of a distroless image.
    dpkg-deb -f "$deb" >"$r/var/lib/dpkg/status.d/$name"
  done
  # update-ca-certificates' bundle: every certificate of the package, in name order.
  mkdir -p "$r/etc/ssl/certs"
  find "$r/usr/share/ca-certificates" -name '*.crt' -print0 | LC_ALL=C sort -z | xargs -0 cat >"$r/etc/ssl/certs/ca-certificates.crt"
  [[ -s $r/etc/ssl/certs/ca-certificates.crt ]] || die "ca-certificates brought no certificate"
  # Documentation, except the copyright files.
  find "$r/usr/share/doc" -type f ! -name copyright -delete
  rm -rf "$r/usr/share/man" "$r/usr/share/lintian" "$r/usr/share/info"
  users "$r"
  [[ -e $r/lib64/ld-linux-x86-64.so.2 || $(dpkg --print-architecture) != amd64 ]] || die "libc6 brought no dynamic loader"
}

test_rootfs() { # test_rootfs ROOTFS PAUSE DEB...
  local r=$1 pause=$2 applet
  shift 2
  rm -rf "$r" && mkdir -p "$r"
  for deb in "$@"; do dpkg-deb -x "$deb" "$r"; done
  [[ -x $r/bin/busybox ]] || die "busybox-static brought no /bin/busybox"
  rm -rf "${r:?}/usr/share"
  for applet in $("$r/bin/busybox" --list | LC_ALL=C sort); do
    [[ -e $r/bin/$applet ]] || ln -s busybox "$r/bin/$applet"
  done
  install -m 0755 "$pause" "$r/bin/pause"
  users "$r"
}

# ---------------------------------------------------------------------------------------------
# Images: one OCI layout ($out/oci) with a tag per image; NAME.inputs holds the hash it was
# built from.

oci=$out/oci
work=$out/work
built=false # whether this run built an image (then old blobs are collected)

inputs_of() { # inputs_of NAME STRING...: the hash of an image's inputs
  local name=$1
  shift
  printf '%s\n' "$name" "$epoch" "$@" | sha256sum | cut -d' ' -f1
}
current() { # current NAME HASH: true when NAME's tag (and archive) were built from HASH
  [[ -f $out/$1.inputs && $(cat "$out/$1.inputs") == "$2" ]] &&
    { [[ $1 == base ]] || [[ -f $out/$1.tar ]]; } &&
    umoci stat --image "$oci:$1" >/dev/null 2>&1
}

# layer IMAGE ROOTFS COMMENT: one layer with ROOTFS's contents at /.
layer() {
  fix_times "$2"
  umoci insert --image "$oci:$1" --history.created "$created" --history.created_by "$3" "$2" / >&2
}

# configure IMAGE USER ENTRYPOINT-OR-- CMD-OR-- [umoci config args...]
configure() {
  local image=$1 user=$2 entrypoint=$3 cmd=$4
  shift 4
  local -a args=(--created "$created" --os linux
    --architecture "$(dpkg --print-architecture)" --config.user "$user"
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt --config.workingdir /)
  [[ $entrypoint == - ]] || args+=(--config.entrypoint "$entrypoint")
  [[ $cmd == - ]] || args+=(--config.cmd "$cmd")
  umoci config --image "$oci:$image" --no-history "${args[@]}" "$@" >&2
}

# archive NAME REPOSITORY-PATH TAG: $out/NAME.tar holding the image as PATH:TAG.
archive() {
  rm -f "$out/$1.tar"
  skopeo copy --quiet "oci:$oci:$1" "oci-archive:$out/$1.tar:$2:$3" >&2
}

new_image() { # new_image NAME: an empty image tagged NAME
  umoci rm --image "$oci:$1" >/dev/null 2>&1 || true
  umoci new --image "$oci:$1" >&2
}

build_base() { # build_base HASH DEB...
  local hash=$1
  shift
  current base "$hash" && return 0
  built=true
  log "building the Debian base ($(for d in "$@"; do basename "$d" .deb; done | paste -sd' '))"
  base_rootfs "$work/base" "$@"
  new_image base
  layer base "$work/base" "Debian $(sed -n "s/^VERSION_CODENAME=//p" /etc/os-release): ${base_packages[*]}; users root, nobody, nonroot (65532)"
  configure base 65532:65532 - -
  echo "$hash" >"$out/base.inputs"
}

build_binary_image() { # build_binary_image NAME HASH BINARY
  local name=$1 hash=$2 bin=$3 p
  current "$name" "$hash" && return 0
  built=true
  log "building $name"
  rm -rf "${work:?}/$name" && mkdir -p "$work/$name/usr/local/bin"
  install -m 0755 "$bin" "$work/$name/usr/local/bin/$name"
  umoci rm --image "$oci:$name" >/dev/null 2>&1 || true
  umoci tag --image "$oci:base" "$name" >&2
  layer "$name" "$work/$name" "COPY $name /usr/local/bin/$name"
  local -a args=()
  for p in ${ports[$name]}; do args+=(--config.exposedports "$p/tcp"); done
  configure "$name" 65532:65532 "/usr/local/bin/$name" - "${args[@]}" \
    --config.label "$source_label" --config.label "$license_label" \
    --config.label "org.opencontainers.image.title=$name" \
    --config.label "org.opencontainers.image.description=${description[$name]}"
  archive "$name" "$prefix/$name" "$tag"
  echo "$hash" >"$out/$name.inputs"
}

build_pause_binary() { # build_pause_binary: $work/pause-bin/pause, static
  mkdir -p "$work/pause-bin"
  gcc -Os -static -s -Wall -Wextra -Werror -o "$work/pause-bin/pause" "$here/images/pause.c" ||
    die "cannot compile hack/images/pause.c statically (gcc and libc6-dev's libc.a needed)"
  "$work/pause-bin/pause" --version >/dev/null || die "the pause binary does not run"
}

build_pause() { # build_pause HASH
  current pause "$1" && return 0
  built=true
  log "building pause"
  rm -rf "$work/pause" && mkdir -p "$work/pause"
  install -m 0755 "$work/pause-bin/pause" "$work/pause/pause"
  new_image pause
  layer pause "$work/pause" "pause (hack/images/pause.c)"
  configure pause 65535:65535 /pause - --config.label "$source_label" --config.label "$license_label" \
    --config.label org.opencontainers.image.title=pause
  archive pause "$prefix/pause" 1
  echo "$1" >"$out/pause.inputs"
}

build_test() { # build_test HASH DEB...
  local hash=$1
  shift
  current test "$hash" && return 0
  built=true
  log "building test (busybox-static, pause)"
  test_rootfs "$work/test" "$work/pause-bin/pause" "$@"
  new_image test
  layer test "$work/test" "busybox-static, /bin/pause"
  configure test 65532:65532 - /bin/pause --config.label "$source_label" --config.label "$license_label" \
    --config.label org.opencontainers.image.title=test
  archive test "$prefix/test" 1
  echo "$hash" >"$out/test.inputs"
}

# publish NAME PATH TAG: pushes when asked; prints "NAME REPOSITORY TAG DIGEST". The push
# reads the layout tag the archive was written from and must store the same digest.
publish() {
  local name=$1 path=$2 tg=$3 digest repository=$2
  digest=sha256:$(skopeo inspect --raw "oci:$oci:$name" | sha256sum | cut -d' ' -f1)
  if [[ -n $registry ]]; then
    repository=$registry/$path
    local -a tls=()
    if $insecure || [[ $registry =~ ^(127\.[0-9.]+|localhost|\[::1\])(:[0-9]+)?$ ]]; then
      tls=(--dest-tls-verify=false)
    fi
    skopeo copy --quiet "${tls[@]}" --digestfile "$work/$name.digest" \
      "oci:$oci:$name" "docker://$repository:$tg" >&2 ||
      die "could not push $name to $repository:$tg"
    [[ $(cat "$work/$name.digest") == "$digest" ]] ||
      die "the registry stored $name as $(cat "$work/$name.digest"), not as its digest $digest"
  fi
  printf '%s %s %s %s\n' "$name" "$repository" "$tg" "$digest"
}

# ---------------------------------------------------------------------------------------------

need_tools
mkdir -p "$out" "$work"
exec 9>"$out/.lock"
flock 9 || die "cannot lock $out"
[[ -f $oci/index.json ]] || umoci init --layout "$oci" >&2

script_hash=$(sha256sum <"$0" | cut -d' ' -f1)
results=()

# The .debs of every wanted image, in one apt-get call; deb_of PACKAGE picks one.
packages=()
[[ -z ${wanted[byoc-controller]:-}${wanted[byoc-webhook]:-} ]] || packages+=("${base_packages[@]}")
[[ -z ${wanted[test]:-} ]] || packages+=("${test_packages[@]}")
if [[ ${#packages[@]} -gt 0 ]]; then
  deb_list=$(debs "${packages[@]}")
fi
deb_of() {
  local d
  for d in $deb_list; do
    [[ $(basename "$d") == "$1"_* ]] && { echo "$d"; return 0; }
  done
  die "apt-get brought no .deb of $1"
}

if [[ -n ${wanted[byoc-controller]:-}${wanted[byoc-webhook]:-} ]]; then
  if [[ -z $binaries ]]; then
    log "cargo build --release --locked -p byoc-controller -p byoc-webhook --bins"
    (cd "$repo" && "${CARGO:-cargo}" build --release --locked -p byoc-controller -p byoc-webhook --bins >&2) ||
      die "cargo build --release failed"
    binaries=$target/release
  fi
  for name in byoc-controller byoc-webhook; do
    [[ -z ${wanted[$name]:-} || -x $binaries/$name ]] || die "$binaries/$name is missing"
  done
  base_debs=()
  for p in "${base_packages[@]}"; do base_debs+=("$(deb_of "$p")"); done
  base_hash=$(inputs_of base "$script_hash" "$(sha256sum "${base_debs[@]}" | cut -d' ' -f1)")
  build_base "$base_hash" "${base_debs[@]}"
  for name in byoc-controller byoc-webhook; do
    [[ -n ${wanted[$name]:-} ]] || continue
    build_binary_image "$name" "$(inputs_of "$name" "$base_hash" "$prefix" "$tag" "$(sha256sum <"$binaries/$name")")" "$binaries/$name"
    results+=("$name $prefix/$name $tag")
  done
fi

if [[ -n ${wanted[pause]:-}${wanted[test]:-} ]]; then
  pause_hash=$(inputs_of pause-bin "$script_hash" "$(sha256sum <"$here/images/pause.c")" "$(gcc --version | head -1)")
  # The binary is cached beside the images that hold it.
  if [[ ! -x $work/pause-bin/pause || $(cat "$work/pause-bin.inputs" 2>/dev/null) != "$pause_hash" ]]; then
    build_pause_binary
    echo "$pause_hash" >"$work/pause-bin.inputs"
  fi
  if [[ -n ${wanted[pause]:-} ]]; then
    build_pause "$(inputs_of pause "$pause_hash" "$prefix")"
    results+=("pause $prefix/pause 1")
  fi
  if [[ -n ${wanted[test]:-} ]]; then
    busybox_deb=$(deb_of busybox-static)
    build_test "$(inputs_of test "$pause_hash" "$prefix" "$(sha256sum <"$busybox_deb")")" "$busybox_deb"
    results+=("test $prefix/test 1")
  fi
fi

# Blobs no tag names any more (earlier builds).
! $built || umoci gc --layout "$oci" >&2
for r in "${results[@]}"; do
  read -r name path tg <<<"$r"
  publish "$name" "$path" "$tg"
done
