{{/* The chart name, or nameOverride. */}}
{{- define "voiceagent-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of the objects: fullnameOverride, or release-chart (just the release
name when it already contains the chart name). */}}
{{- define "voiceagent-operator.fullname" -}}
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

{{- define "voiceagent-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of the manager's pods; never change them after install (the Deployment's
selector is immutable). */}}
{{- define "voiceagent-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "voiceagent-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "voiceagent-operator.labels" -}}
helm.sh/chart: {{ include "voiceagent-operator.chart" . }}
{{ include "voiceagent-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: voiceagent-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "voiceagent-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "voiceagent-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference from {repository, tag, digest}: repository[:tag][@digest]. The
tag defaults to the chart's appVersion. Call with (list image chart). */}}
{{- define "voiceagent-operator.imageRef" -}}
{{- $img := index . 0 }}
{{- $chart := index . 1 }}
{{- $ref := printf "%s:%s" $img.repository (default $chart.AppVersion $img.tag) }}
{{- if $img.digest }}
{{- $ref = printf "%s@%s" $ref $img.digest }}
{{- end }}
{{- $ref }}
{{- end }}

{{- define "voiceagent-operator.image" -}}
{{- include "voiceagent-operator.imageRef" (list .Values.image .Chart) }}
{{- end }}

{{/* The gateway pods' image: gateway.image when its repository is set, else the
operator's own image. */}}
{{- define "voiceagent-operator.gatewayImage" -}}
{{- if .Values.gateway.image.repository }}
{{- include "voiceagent-operator.imageRef" (list .Values.gateway.image .Chart) }}
{{- else }}
{{- include "voiceagent-operator.image" . }}
{{- end }}
{{- end }}
