#!/usr/bin/env bash
# Runs every fuzz target under fuzz/ for a bounded time (part of `make test`), or one target for
# as long as you like. Needs the nightly toolchain (`rustup toolchain install nightly`); installs
# cargo-fuzz from crates.io when it is missing.
#
#   hack/fuzz.sh                          every target, FUZZ_SECONDS each (default 20)
#   hack/fuzz.sh TARGET...                only these targets
#   FUZZ_SECONDS=3600 hack/fuzz.sh        a long run (an hour per target)
#
# Environment:
#   FUZZ_SECONDS     seconds per target (default 20)
#   FUZZ_JOBS        parallel fuzzing processes per target (libFuzzer -fork; default 1)
#   FUZZ_TOOLCHAIN   the nightly toolchain to use (default nightly)
#   FUZZ_TARGET_DIR  where the fuzz build, logs and working corpus go (default
#                    $CARGO_TARGET_DIR/fuzz when CARGO_TARGET_DIR is set, as in CI, else fuzz/target)
#
# Every run starts from the committed seeds in fuzz/corpus/TARGET and grows a working corpus in
# $FUZZ_TARGET_DIR/corpus/TARGET (never committed), which later runs reuse. A crash stops the run with
# the failing input saved in fuzz/artifacts/TARGET/ and the command that reproduces it.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
seconds=${FUZZ_SECONDS:-20}
jobs=${FUZZ_JOBS:-1}
toolchain=${FUZZ_TOOLCHAIN:-nightly}
default_dir=$repo/fuzz/target
[[ -n ${CARGO_TARGET_DIR:-} ]] && default_dir=$CARGO_TARGET_DIR/fuzz
target_dir=${FUZZ_TARGET_DIR:-$default_dir}

log() { printf '[fuzz] %s\n' "$*" >&2; }

# cargo-fuzz needs nightly compiler flags (-Zsanitizer). Without a nightly toolchain (it cannot
# always be downloaded), the stable one is told to accept them (RUSTC_BOOTSTRAP=1).
if ! cargo "+$toolchain" --version >/dev/null 2>&1; then
  if [[ -z ${FUZZ_TOOLCHAIN:-} ]] && rustup toolchain install nightly --profile minimal >/dev/null 2>&1; then
    log "installed the nightly toolchain"
  else
    log "no $toolchain toolchain; using stable with RUSTC_BOOTSTRAP=1"
    toolchain=stable
    export RUSTC_BOOTSTRAP=1
  fi
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

cd "$repo/fuzz"
mapfile -t all < <(cargo "+$toolchain" fuzz list)
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${all[@]}")

# One build for all targets (they share every dependency), in release mode with debug
# assertions and sanitizers as cargo-fuzz sets them.
log "building ${#all[@]} targets"
cargo "+$toolchain" fuzz build --target-dir "$target_dir"

for target in "${targets[@]}"; do
  work=$target_dir/corpus/$target
  mkdir -p "$work" "$repo/fuzz/artifacts/$target"
  log "$target: ${seconds}s, $jobs job(s)"
  # -max_len: AdmissionReviews need room; the parsers do not. Seeds are read but never written:
  # new inputs go to the working corpus (first directory).
  case $target in
    admission_*) max_len=65536 ;;
    *) max_len=4096 ;;
  esac
  out=$target_dir/$target.log
  parallel=()
  ((jobs > 1)) && parallel=(-fork="$jobs")
  status=0
  cargo "+$toolchain" fuzz run --target-dir "$target_dir" "$target" "$work" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
    "${parallel[@]}" -print_final_stats=1 >"$out" 2>&1 || status=$?
  if ((status != 0)); then
    tail -n 60 "$out" >&2
    log "$target FAILED (full log: $out); the input is in fuzz/artifacts/$target/"
    exit 1
  fi
  grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "$out" |
    sed "s/^/[fuzz] $target: /" >&2 || true
done
log "all targets ran ${seconds}s without a finding"
