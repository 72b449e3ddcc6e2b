#!/usr/bin/env bash
# The soak (issue 8): SOAK_SECONDS (default 600) of mixed admission load plus grant churn
# against a fresh local control plane with the controller and the webhook running; zero wrong
# decisions and flat memory, or it fails. Run by hand, not in CI; the numbers it prints go to
# docs/benchmarks.md under "## Soak".
#
#   hack/soak.sh                         10 minutes, release build
#   SOAK_SECONDS=120 hack/soak.sh        a short one
#
# Environment:
#   SOAK_SECONDS          how long the load runs (default 600)
#   SOAK_SAMPLE_SECONDS   how often RSS is sampled (default 10)
#   SOAK_PROFILE          release (default) or dev
#
# The log, with one RSS sample per line and the SUMMARY lines, is kept in target/soak/.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
profile=${SOAK_PROFILE:-release}
export SOAK_SECONDS=${SOAK_SECONDS:-600}
export SOAK_SAMPLE_SECONDS=${SOAK_SAMPLE_SECONDS:-10}

case $profile in
  release) flags=(--release) ;;
  dev) flags=() ;;
  *) echo "SOAK_PROFILE must be release or dev" >&2; exit 2 ;;
esac

cd "$repo"
out=${CARGO_TARGET_DIR:-$repo/target}/soak
mkdir -p "$out"
log=$out/soak-$(date -u +%Y%m%dT%H%M%SZ).log
cargo build "${flags[@]}" --bins -p byoc-webhook -p byoc-controller
cargo test "${flags[@]}" --no-run -p byoc-e2e --test soak
{
  echo "# $(date -u +%FT%TZ) SOAK_SECONDS=$SOAK_SECONDS profile=$profile"
  echo "# $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), load $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$log"
"$here/local-cluster.sh" --dir "$out/cluster" exec -- \
  cargo test "${flags[@]}" -p byoc-e2e --test soak -- --ignored --nocapture --test-threads=1 2>&1 |
  tee -a "$log"
status=${PIPESTATUS[0]}
echo "log: $log"
grep '^SUMMARY' "$log" || true
exit "$status"
