{{/* Name prefix of every object. */}}
{{- define "tokenwarden.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains "tokenwarden" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-tokenwarden" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tokenwarden.selectorLabels" -}}
app.kubernetes.io/name: tokenwarden
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "tokenwarden.labels" -}}
{{ include "tokenwarden.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "tokenwarden.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "tokenwarden.sidecarImage" -}}
{{- printf "%s:%s" .Values.sidecar.image.repository (default .Chart.AppVersion .Values.sidecar.image.tag) -}}
{{- end -}}

{{- define "tokenwarden.tlsSecret" -}}{{ include "tokenwarden.fullname" . }}-tls{{- end -}}
{{- define "tokenwarden.controlService" -}}{{ include "tokenwarden.fullname" . }}-control{{- end -}}
{{- define "tokenwarden.webhookService" -}}{{ include "tokenwarden.fullname" . }}-webhook{{- end -}}
{{- define "tokenwarden.injector" -}}{{ include "tokenwarden.fullname" . }}-injector{{- end -}}
{{- define "tokenwarden.validator" -}}{{ include "tokenwarden.fullname" . }}-validator{{- end -}}

{{/* Namespaces never injected: the release's own plus the configured ones. */}}
{{- define "tokenwarden.excludedNamespaces" -}}
{{- $out := list .Release.Namespace -}}
{{- range .Values.webhook.excludeNamespaces -}}{{- if ne . $.Release.Namespace -}}{{- $out = append $out . -}}{{- end -}}{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* "cpu=50m,memory=64Mi" from a resources map. */}}
{{- define "tokenwarden.quantities" -}}
{{- $parts := list -}}
{{- range $k, $v := . -}}{{- $parts = append $parts (printf "%s=%v" $k $v) -}}{{- end -}}
{{- join "," $parts -}}
{{- end -}}

{{/* Relabelings that set `workload` as the sidecar names it; later rules win
when their label is set, so the most preferred label comes last. */}}
{{- define "tokenwarden.workloadRelabelings" -}}
- sourceLabels: [__meta_kubernetes_pod_name]
  targetLabel: workload
- sourceLabels: [__meta_kubernetes_pod_label_pod_template_hash, __meta_kubernetes_pod_name]
  regex: '.+;(.+)-[^-]+-[^-]+'
  targetLabel: workload
- sourceLabels: [__meta_kubernetes_pod_label_tokenwarden_dev_workload]
  regex: '(.+)'
  targetLabel: workload
- sourceLabels: [__meta_kubernetes_pod_label_app]
  regex: '(.+)'
  targetLabel: workload
- sourceLabels: [__meta_kubernetes_pod_label_app_kubernetes_io_name]
  regex: '(.+)'
  targetLabel: workload
{{- end -}}
