{{/* Names. Object names derived from the full name stay below 63 characters. */}}
{{- define "byoc-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "byoc-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "byoc-operator.controller.fullname" -}}
{{- include "byoc-operator.fullname" . }}-controller
{{- end -}}

{{- define "byoc-operator.webhook.fullname" -}}
{{- include "byoc-operator.fullname" . }}-webhook
{{- end -}}

{{/*
The Secret holding the webhook's serving certificate (tls.crt, tls.key, ca.crt). Its name
differs between the two modes, so switching modes never has Helm delete the Secret that
cert-manager has just written.
*/}}
{{- define "byoc-operator.webhook.tlsSecretName" -}}
{{- include "byoc-operator.webhook.fullname" . }}-{{ if .Values.certManager.enabled }}cm-{{ end }}tls
{{- end -}}

{{/* The user name the API server gives the controller's service account: a label writer. */}}
{{- define "byoc-operator.controller.user" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "byoc-operator.controller.fullname" . }}
{{- end -}}

{{/*
The exempt namespaces: policy.exemptNamespaces plus kube-system and the release namespace,
which are always exempt (they hold what brings the cluster and the webhook back), plus
cert-manager's namespace when cert-manager issues the webhook's certificate (unless
certManager.exemptNamespace is false): its pods renew that certificate, and must start while
the webhook is down. Sorted and unique, one JSON list, so the ConfigMap and the webhook
configuration can never disagree.
*/}}
{{- define "byoc-operator.exemptNamespaces" -}}
{{- $ns := concat (list "kube-system" .Release.Namespace) (.Values.policy.exemptNamespaces | default list) -}}
{{- $cm := .Values.certManager -}}
{{- if and $cm.enabled $cm.exemptNamespace (not .Values.webhook.external.url) -}}
{{- $ns = append $ns $cm.namespace -}}
{{- end -}}
{{- $ns | uniq | sortAlpha | toJson -}}
{{- end -}}

{{/*
Who may write `byoc.toolforge.org/` namespace labels: the controller plus
policy.extraLabelWriters. One JSON list, so the ConfigMap and the guard's match condition
never disagree.
*/}}
{{- define "byoc-operator.labelWriters" -}}
{{- concat (list (include "byoc-operator.controller.user" .)) (.Values.policy.extraLabelWriters | default list) | uniq | toJson -}}
{{- end -}}

{{/*
The protected namespace label prefixes (policy.protectedLabelPrefixes), lowercased (the API
server accepts only lowercase key prefixes), as one JSON list for the ConfigMap.
*/}}
{{- define "byoc-operator.protectedPrefixes" -}}
{{- $out := list -}}
{{- range .Values.policy.protectedLabelPrefixes | default list -}}
{{- if not (trim .) -}}{{- fail "policy.protectedLabelPrefixes: a prefix must not be empty" -}}{{- end -}}
{{- $out = append $out (lower .) -}}
{{- end -}}
{{- $out | uniq | toJson -}}
{{- end -}}

{{/*
The CEL predicate on a label key `k` of the namespace guard's match condition: under the byoc
prefix or a protected one. A chain of startsWith keeps the cost linear in the labels.
*/}}
{{- define "byoc-operator.guardedKey" -}}
k.startsWith('byoc.toolforge.org/')
{{- range (include "byoc-operator.protectedPrefixes" . | fromJsonArray) }} || k.startsWith({{ . | toJson }}){{ end -}}
{{- end -}}

{{/* Labels. */}}
{{- define "byoc-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "byoc-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: byoc-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: include with (dict "ctx" $ "component" "webhook"). */}}
{{- define "byoc-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "byoc-operator.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "byoc-operator.componentLabels" -}}
{{ include "byoc-operator.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The image of one component: include with (dict "ctx" $ "image" .Values.webhook.image). */}}
{{- define "byoc-operator.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Pod security context shared by both components: non-root, seccomp RuntimeDefault. */}}
{{- define "byoc-operator.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container security context shared by both components. */}}
{{- define "byoc-operator.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
topologySpreadConstraints with this component's labelSelector and matchLabelKeys added:
include with (dict "ctx" $ "component" "webhook" "constraints" .Values.webhook.topologySpreadConstraints).
*/}}
{{- define "byoc-operator.topologySpread" -}}
{{- $selector := include "byoc-operator.selectorLabels" (dict "ctx" .ctx "component" .component) | fromYaml -}}
{{- $out := list -}}
{{- range .constraints -}}
{{- $c := deepCopy . -}}
{{- if not (hasKey $c "labelSelector") -}}
{{- $_ := set $c "labelSelector" (dict "matchLabels" $selector) -}}
{{- end -}}
{{- if not (hasKey $c "matchLabelKeys") -}}
{{- $_ := set $c "matchLabelKeys" (list "pod-template-hash") -}}
{{- end -}}
{{- $out = append $out $c -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* host:port for a listen flag; IPv6 hosts get brackets: (dict "host" "::" "port" 8080). */}}
{{- define "byoc-operator.hostPort" -}}
{{- if contains ":" .host -}}
[{{ .host }}]:{{ .port }}
{{- else -}}
{{ .host }}:{{ .port }}
{{- end -}}
{{- end -}}

{{/* Where the registry credentials Secret (policy.registryLookups.credentialsSecret) is mounted. */}}
{{- define "byoc-operator.registryCredentialsDir" -}}
/etc/byoc-operator/registry-credentials
{{- end }}

{{/* The volume mount of the registry credentials, when a Secret is set (both Deployments). */}}
{{- define "byoc-operator.registryCredentialsMount" -}}
{{- if .Values.policy.registryLookups.credentialsSecret -}}
- name: registry-credentials
  mountPath: {{ include "byoc-operator.registryCredentialsDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{/* The volume of the registry credentials Secret, when one is set (both Deployments). */}}
{{- define "byoc-operator.registryCredentialsVolume" -}}
{{- with .Values.policy.registryLookups.credentialsSecret -}}
- name: registry-credentials
  secret:
    secretName: {{ . }}
    defaultMode: 288  # 0440; decimal, which every YAML parser reads alike
{{- end }}
{{- end }}
