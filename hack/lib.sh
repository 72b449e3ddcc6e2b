# shellcheck shell=bash
# Shell functions the hack/ scripts share; sourced, never run:
#
#   # shellcheck source-path=SCRIPTDIR source=lib.sh
#   source "$here/lib.sh"
#
# The sourcing script sets `log_prefix` (what log lines start with) and, for wait_until,
# `timeout_s`. Nothing here runs on source.

# log MESSAGE...: one line on stderr, `[PREFIX] MESSAGE`. A log line never fails: stderr may be
# a pipe whose reader is gone (`make run 2>&1 | tee`, then Ctrl-C), and stopping what a script
# started must not depend on it.
log() { printf '[%s] %s\n' "${log_prefix:-hack}" "$*" >&2 2>/dev/null || true; }
die() { log "error: $*"; exit 1; }

# usage [STATUS]: prints the running script's header comment (line 2 up to `set -euo`), exits.
usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
  exit "${1:-2}"
}

# ---------------------------------------------------------------------------------------------
# Processes

# running PID: the process exists and is not a zombie.
running() {
  local state
  [[ -r /proc/$1/stat ]] || return 1
  state=$(sed 's/^.*) \([A-Za-z]\).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}

# names_dir PID DIR: PID runs and its command line names DIR/ (so it is one of the processes a
# script started for that state dir, not a stranger that reuses a recorded pid).
names_dir() {
  [[ $1 =~ ^[0-9]+$ ]] && running "$1" &&
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2/"
}

# start_time PID: the process's start time (clock ticks after boot, field 22 of /proc/PID/stat):
# with the pid, it names one process for the life of the machine, whatever reuses the pid later.
start_time() {
  local stat fields
  { stat=$(<"/proc/$1/stat"); } 2>/dev/null || return 1
  stat=${stat##*) }
  read -ra fields <<<"$stat"
  printf "%s" "${fields[19]}"
}

# record_pid PID FILE: writes `PID START` to FILE (see recorded_pid).
record_pid() { printf '%s %s\n' "$1" "$(start_time "$1" || true)" >"$2"; }

# recorded_pid FILE DIR: prints the pid FILE records when that very process still runs (same
# start time) and its command line names DIR/; fails otherwise. Clean-up ends only such pids:
# never a process found by name, never one that merely reuses a recorded pid.
recorded_pid() {
  local pid="" start=""
  [[ -r $1 ]] || return 1
  read -r pid start <"$1" || [[ -n $pid ]] || return 1
  [[ -n $start ]] && names_dir "$pid" "$2" && [[ $(start_time "$pid") == "$start" ]] &&
    printf '%s' "$pid"
}

# write_private FILE: writes stdin to FILE, readable by its owner only from the moment it exists:
# into a new file made by mktemp (always mode 600, whatever the umask), renamed over FILE.
write_private() {
  local tmp
  tmp=$(mktemp "$1.XXXXXX")
  if cat >"$tmp"; then mv -f "$tmp" "$1"; else rm -f "$tmp"; return 1; fi
}

# spawn LOG CMD...: starts CMD in the background in its own session (so a terminal's Ctrl-C
# reaches only the script, which then stops what it started in order), with stdin from
# /dev/null and fd 9 (the scripts' lock) closed, appending to LOG after a dated header line.
# Its pid is in $! afterwards.
spawn() {
  local log_file=$1
  shift
  printf '=== %s: %s\n' "$(date -u +%FT%TZ)" "$*" >>"$log_file"
  setsid "$@" </dev/null >>"$log_file" 2>&1 9>&- &
}

# stop_pid PID NAME [SECONDS]: SIGTERM, then SIGKILL after SECONDS (default 20); reaps the
# process if it is a child of this shell.
stop_pid() {
  local pid=$1 name=$2 tenths=$((${3:-20} * 10)) i
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 1; i <= tenths; i++)); do
    running "$pid" || break
    if ((i == tenths)); then
      log "$name ($pid) did not stop after ${3:-20}s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    sleep 0.1
  done
  wait "$pid" 2>/dev/null || true
}

# wait_until PID CHECK...: waits until CHECK succeeds. Returns 1 if PID exits first, 2 when
# $timeout_s seconds pass.
# shellcheck disable=SC2154 # timeout_s is the sourcing script's
wait_until() {
  local pid=$1 deadline=$((SECONDS + timeout_s))
  shift
  until "$@" >/dev/null 2>&1; do
    running "$pid" || return 1
    ((SECONDS < deadline)) || return 2
    sleep 0.2
  done
}

# fail LOG MESSAGE: logs MESSAGE with the last 40 lines of LOG and exits 1.
fail() {
  log "$2; last lines of $1:"
  tail -n 40 "$1" | sed 's/^/    /' >&2
  exit 1
}

# ---------------------------------------------------------------------------------------------
# Ports

# Ports handed out by pick_port in this shell, so two components never get the same one.
picked_ports=" "

# pick_port VAR: stores a free loopback port in VAR. Ports come from 20000-31999, below Linux's
# ephemeral range (32768+), so outgoing connections cannot take them between pick and bind.
pick_port() {
  local p _
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 12000))
    [[ $picked_ports == *" $p "* ]] && continue
    (: <"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
    picked_ports+="$p "
    printf -v "$1" '%s' "$p"
    return 0
  done
  die "found no free port on 127.0.0.1"
}

# ---------------------------------------------------------------------------------------------
# Certificates

# new_ca PREFIX CN DAYS: a P-256 CA key and self-signed certificate, PREFIX.key and PREFIX.crt.
new_ca() {
  local prefix=$1 cn=$2 days=$3
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout "$prefix.key" -out "$prefix.crt" -days "$days" -sha256 -subj "/CN=$cn" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
}

# sign CA OUT SUBJECT DAYS EXTENSION...: a P-256 key OUT.key and a leaf certificate OUT.crt for
# SUBJECT, signed by CA.crt/CA.key, with the given extension lines (e.g.
# "extendedKeyUsage = clientAuth", "subjectAltName = IP:127.0.0.1") besides the leaf's own.
sign() {
  local ca=$1 out=$2 subject=$3 days=$4
  shift 4
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$out.key" 2>/dev/null
  openssl req -new -key "$out.key" -subj "$subject" -out "$out.csr"
  printf '%s\n' "basicConstraints = critical,CA:FALSE" "keyUsage = critical,digitalSignature" \
    "authorityKeyIdentifier = keyid" "$@" >"$out.ext"
  openssl x509 -req -in "$out.csr" -CA "$ca.crt" -CAkey "$ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days "$days" -sha256 -extfile "$out.ext" \
    -out "$out.crt" 2>/dev/null
  rm -f "$out.csr" "$out.ext"
}

# write_kubeconfig FILE SERVER CA USER CERT: a kubeconfig (mode 600 from the start, see
# write_private) for SERVER, trusting CA.crt, as USER with the client certificate
# CERT.crt/CERT.key, all embedded so the file can be copied.
write_kubeconfig() {
  local file=$1 server=$2 ca=$3 user=$4 cert=$5
  write_private "$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: byoc-local
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 <"$ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$cert.crt")
    client-key-data: $(base64 -w0 <"$cert.key")
contexts:
- name: byoc-local
  context:
    cluster: byoc-local
    user: $user
current-context: byoc-local
EOF
}

# ---------------------------------------------------------------------------------------------
# make run

# apply_sample_grant NAMESPACE REASON REGISTRY: `make run`'s sample tool namespace and a grant
# of REGISTRY to it (named like the namespace), on the cluster of $KUBECONFIG.
apply_sample_grant() {
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $1
---
apiVersion: byoc.toolforge.org/v1alpha1
kind: ByocGrant
metadata:
  name: $1
spec:
  namespace: $1
  reason: "$2"
  registries: [$3]
EOF
}
