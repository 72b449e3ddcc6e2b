#!/usr/bin/env bash
# Prints the ValidatingWebhookConfiguration for a byoc-webhook that runs on this machine, rendered
# from the Helm chart's own template (charts/byoc-operator/templates/webhook/admission.yaml with
# webhook.external set), so `make run` (hack/run.sh), the end-to-end tests and a Helm install
# register the same webhooks, rules, match conditions and selectors: one source, no copies.
#
#   hack/webhook-registration.sh --url https://127.0.0.1:PORT --ca-file CA.crt
#                                [--name NAME] [--label KEY=VALUE]...
#
#   --url       where the API server calls the webhook (`/validate` is appended)
#   --ca-file   PEM CA that signed the webhook's serving certificate (the caBundle)
#   --name      name of the configuration (default byoc-webhook)
#   --label     an extra label on it (repeatable)
#
# The release namespace is byoc-system, so the exempt namespaces are the chart's defaults:
# kube-system, kube-public, kube-node-lease and byoc-system. Helm comes from
# hack/build-control-plane.sh (built once, cached).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$here/versions.env"

log() { printf '[webhook-registration] %s\n' "$*" >&2 2>/dev/null || true; }
die() { log "error: $*"; exit 2; }
usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
  exit 2
}

url="" ca_file="" name=byoc-webhook labels=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --url) [[ $# -ge 2 ]] || usage; url=$2; shift 2 ;;
    --ca-file) [[ $# -ge 2 ]] || usage; ca_file=$2; shift 2 ;;
    --name) [[ $# -ge 2 ]] || usage; name=$2; shift 2 ;;
    --label) [[ $# -ge 2 && $2 == *=* ]] || usage; labels+=("$2"); shift 2 ;;
    -h | --help) usage ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ -n $url && -n $ca_file ]] || usage
[[ -r $ca_file ]] || die "cannot read the CA file $ca_file"
grep -q -- '-----BEGIN CERTIFICATE-----' "$ca_file" || die "$ca_file holds no PEM certificate"

helm=$("$here/build-control-plane.sh")/helm
[[ -x $helm ]] || die "$helm is missing; run hack/build-control-plane.sh"

# Values as JSON (a valid YAML file): no quoting rules of `--set` to get wrong.
values=$(mktemp)
trap 'rm -f "$values"' EXIT
json_string() {
  local s=${1//\\/\\\\}
  printf '"%s"' "${s//\"/\\\"}"
}
{
  printf '{"fullnameOverride": %s, "commonLabels": {' "$(json_string "$name")"
  sep=""
  for label in "${labels[@]}"; do
    printf '%s%s: %s' "$sep" "$(json_string "${label%%=*}")" "$(json_string "${label#*=}")"
    sep=", "
  done
  # The label writers the guard's match condition sends every namespace write of: the
  # controller as it runs beside a webhook on this machine (hack/run.sh, the e2e tests), which
  # is also the policy's default label writer.
  printf '}, "policy": {"extraLabelWriters": ["system:serviceaccount:byoc-system:byoc-controller"]}'
  # Only the webhook configuration is rendered: the NetworkPolicy (and the API server's
  # addresses it needs) is for webhook pods, not for a webhook outside the cluster.
  printf ', "networkPolicy": {"enabled": false}'
  printf ', "webhook": {"external": {"url": %s, "caBundle": "%s"}}}\n' \
    "$(json_string "$url")" "$(base64 -w0 <"$ca_file")"
} >"$values"

# The chart's CRD file is a symlink into crds/; helm says so on every render.
"$helm" template byoc-operator "$repo/charts/byoc-operator" --namespace byoc-system \
  --kube-version "$KUBERNETES_VERSION" --values "$values" \
  --show-only templates/webhook/admission.yaml 2> >(grep -v 'found symbolic link in path' >&2)
