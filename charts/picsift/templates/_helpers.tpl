{{/* Chart name, at most 63 characters. */}}
{{- define "picsift.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: release name, plus the chart name unless the release name already
contains it. Truncated to 53 characters so that names with a suffix
("-operator", "-metrics") still fit the 63 of a DNS label.
*/}}
{{- define "picsift.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 53 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 53 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 53 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "picsift.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "picsift.labels" -}}
helm.sh/chart: {{ include "picsift.chart" . }}
app.kubernetes.io/name: {{ include "picsift.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: picsift
{{- end }}

{{/* Selector labels of one component: (dict "ctx" $ "component" "gateway"). */}}
{{- define "picsift.selectorLabels" -}}
app.kubernetes.io/name: {{ include "picsift.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels of one component's resources: (dict "ctx" $ "component" "gateway"). */}}
{{- define "picsift.componentLabels" -}}
{{ include "picsift.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
A component's image: (dict "ctx" $ "image" .Values.gateway.image) gives
<image.registry>/<repository>:<tag>, the tag the component's, else
image.tag, else the chart's appVersion.
*/}}
{{- define "picsift.image" -}}
{{- $repository := .image.repository }}
{{- with .ctx.Values.image.registry }}
{{- $repository = printf "%s/%s" (trimSuffix "/" .) $repository }}
{{- end }}
{{- printf "%s:%s" $repository (.image.tag | default .ctx.Values.image.tag | default .ctx.Chart.AppVersion) }}
{{- end }}

{{- define "picsift.configMapName" -}}
{{- printf "%s-config" (include "picsift.fullname" .) }}
{{- end }}

{{- define "picsift.gatewayServiceAccountName" -}}
{{- printf "%s-gateway" (include "picsift.fullname" .) }}
{{- end }}

{{- define "picsift.operatorServiceAccountName" -}}
{{- printf "%s-operator" (include "picsift.fullname" .) }}
{{- end }}

{{- define "picsift.workerServiceAccountName" -}}
{{- printf "%s-worker" (include "picsift.fullname" .) }}
{{- end }}

{{/* Namespace of the default WorkerPool's Jobs. */}}
{{- define "picsift.jobsNamespace" -}}
{{- .Values.workerPool.namespace | default .Release.Namespace }}
{{- end }}

{{/*
Namespaces where worker Jobs run and so where the workers' ServiceAccount,
the ConfigMap and the operator's namespaced Role must exist: the release
namespace, plus the WorkerPool's when it differs. A JSON list.
*/}}
{{- define "picsift.namespaces" -}}
{{- $list := list .Release.Namespace }}
{{- if and .Values.workerPool.enabled (ne (include "picsift.jobsNamespace" .) .Release.Namespace) }}
{{- $list = append $list (include "picsift.jobsNamespace" .) }}
{{- end }}
{{- toJson $list }}
{{- end }}

{{/*
Secret-backed environment of gateway, operator and workers: EnvVars with
secretKeyRef to the existing Secrets named in values.
*/}}
{{- define "picsift.secretEnv" -}}
- name: PICSIFT_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "redis.existingSecret: name the Secret that holds the Redis URL" .Values.redis.existingSecret }}
      key: {{ .Values.redis.urlKey }}
- name: PICSIFT_POSTGRES_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "postgres.existingSecret: name the Secret that holds the PostgreSQL URL" .Values.postgres.existingSecret }}
      key: {{ .Values.postgres.urlKey }}
{{- with .Values.s3.existingSecret }}
- name: PICSIFT_S3_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.s3.accessKeyIdKey }}
- name: PICSIFT_S3_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.s3.secretAccessKeyKey }}
{{- end }}
{{- with .Values.webhook.existingSecret }}
- name: PICSIFT_WEBHOOK_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.webhook.secretKey }}
{{- end }}
{{- end }}

{{/* Environment of gateway and operator pods: their namespace, then secrets. */}}
{{- define "picsift.podEnv" -}}
- name: PICSIFT_KUBERNETES_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{ include "picsift.secretEnv" . }}
{{- end }}

{{/*
Settings whose values were renamed to the name the setting has everywhere
else (docs/configuration.md): the old name still wins when set, for one
release, and NOTES.txt warns about it.
*/}}
{{- define "picsift.log" -}}
{{- if hasKey .Values "logLevel" }}{{ .Values.logLevel }}{{ else }}{{ .Values.log }}{{ end -}}
{{- end }}

{{- define "picsift.ttlSecsAfterFinished" -}}
{{- if hasKey .Values.operator "ttlSecondsAfterFinished" }}{{ .Values.operator.ttlSecondsAfterFinished | int64 }}{{ else }}{{ .Values.operator.ttlSecsAfterFinished | int64 }}{{ end -}}
{{- end }}
