{{/* The chart's name. */}}
{{- define "cocoon-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name; names every object, cluster-scoped ones included, so
two releases never collide.
*/}}
{{- define "cocoon-operator.fullname" -}}
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

{{- define "cocoon-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cocoon-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cocoon-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "cocoon-operator.labels" -}}
helm.sh/chart: {{ include "cocoon-operator.chart" . }}
{{ include "cocoon-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: cocoon
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "cocoon-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cocoon-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "cocoon-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Service the apiserver calls for admission reviews. */}}
{{- define "cocoon-operator.webhookService" -}}
{{- printf "%s-webhook" (include "cocoon-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cocoon-operator.webhookHost" -}}
{{- printf "%s.%s.svc" (include "cocoon-operator.webhookService" .) .Release.Namespace }}
{{- end }}

{{- define "cocoon-operator.webhookConfigName" -}}
{{- default (printf "%s.cocoon.network" (include "cocoon-operator.fullname" .)) .Values.webhook.configName }}
{{- end }}

{{- define "cocoon-operator.leaseNamespace" -}}
{{- default .Release.Namespace .Values.leaderElection.namespace }}
{{- end }}

{{- define "cocoon-operator.ledgerNamespace" -}}
{{- default .Release.Namespace .Values.chain.fundingLedger.namespace }}
{{- end }}

{{- define "cocoon-operator.treasuryNamespace" -}}
{{- default .Release.Namespace .Values.chain.treasurySecret.namespace }}
{{- end }}

{{/* Refuse combinations the operator cannot run with. */}}
{{- define "cocoon-operator.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled: two replicas would both act on every worker" }}
{{- end }}
{{- if and .Values.chain.treasurySecret.name (not .Values.chain.endpoint) }}
{{- fail "chain.treasurySecret is set but chain.endpoint is empty: the chain step is off" }}
{{- end }}
{{- end }}
