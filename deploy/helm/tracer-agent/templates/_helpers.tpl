{{/*
Names and labels shared by the templates.
*/}}

{{/* The chart name, overridable with nameOverride. */}}
{{- define "tracer-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The objects' name: the release name if it already contains the chart name (helm install
tracer-agent ... gives plain "tracer-agent", as in deploy/kubernetes/), else RELEASE-CHART.
*/}}
{{- define "tracer-agent.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tracer-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tracer-agent.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tracer-agent.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Selector labels: must never change between upgrades (a DaemonSet's selector is immutable). */}}
{{- define "tracer-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tracer-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tracer-agent.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tracer-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tracer
{{- end }}

{{/* "true" when the values let the agent edit requests (rewrite or inject anywhere). */}}
{{- define "tracer-agent.writes" -}}
{{- $writes := has .Values.writeMode (list "rewrite" "inject") }}
{{- range .Values.writeModeFor }}
{{- if or (hasSuffix "=rewrite" .) (hasSuffix "=inject" .) }}{{ $writes = true }}{{ end }}
{{- end }}
{{- $writes }}
{{- end }}

{{/* Where the Secret of collector.tls.secretName is mounted. */}}
{{- define "tracer-agent.tlsDir" -}}
/etc/tracer-agent/otlp-tls
{{- end }}
