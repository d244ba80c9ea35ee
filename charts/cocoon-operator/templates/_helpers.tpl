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

{{/* The node agent's pods: another app name, so no selector of the operator's
     (Deployment, Services, PodDisruptionBudget) ever matches them. */}}
{{- define "cocoon-operator.nodeAgentSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-node-agent" (include "cocoon-operator.name" .) | trunc 63 | trimSuffix "-" }}
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

{{/* The node agent's image: its own repository, the operator's tag by default. */}}
{{- define "cocoon-operator.nodeAgentImage" -}}
{{- $img := .Values.nodeAgent.image }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{/* The node agent's ServiceAccount and object names. */}}
{{- define "cocoon-operator.nodeAgentName" -}}
{{- printf "%s-node-agent" (include "cocoon-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
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

{{- define "cocoon-operator.rootOwnerNamespace" -}}
{{- default .Release.Namespace .Values.chain.rootOwnerSecret.namespace }}
{{- end }}

{{- define "cocoon-operator.registrationLedgerNamespace" -}}
{{- default .Release.Namespace .Values.chain.registrationLedger.namespace }}
{{- end }}

{{- define "cocoon-operator.treasuryNamespace" -}}
{{- default .Release.Namespace .Values.chain.treasurySecret.namespace }}
{{- end }}

{{/*
The kubernetes.io/tls Secret the operator's webhook serves from: webhook.certSecret,
or, when cert-manager issues it, <fullname>-webhook-tls; empty: the operator
makes a self-signed certificate at each start.
*/}}
{{- define "cocoon-operator.webhookCertSecret" -}}
{{- if .Values.webhook.enabled }}
{{- if .Values.webhook.certSecret }}
{{- .Values.webhook.certSecret }}
{{- else if .Values.webhook.certManager.enabled }}
{{- printf "%s-tls" (include "cocoon-operator.webhookService" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "cocoon-operator.metricsService" -}}
{{- printf "%s-metrics" (include "cocoon-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
PromQL label matchers selecting this release's operator series in the alert
rules. Default: what a ServiceMonitor scrape gives (job = the Service's name,
namespace = the target's namespace).
*/}}
{{- define "cocoon-operator.metricsSelector" -}}
{{- default (printf "job=%q,namespace=%q" (include "cocoon-operator.metricsService" .) .Release.Namespace) .Values.monitoring.prometheusRule.selector }}
{{- end }}

{{/* Refuse combinations the operator cannot run with. */}}
{{- define "cocoon-operator.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled: two replicas would both act on every worker" }}
{{- end }}
{{- if and .Values.chain.treasurySecret.name (not .Values.chain.endpoint) }}
{{- fail "chain.treasurySecret is set but chain.endpoint is empty: the chain step is off" }}
{{- end }}
{{- if and .Values.chain.rootOwnerSecret.name (not .Values.chain.endpoint) }}
{{- fail "chain.rootOwnerSecret is set but chain.endpoint is empty: the chain step is off" }}
{{- end }}
{{- if and .Values.monitoring.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "monitoring.serviceMonitor.enabled needs metrics.enabled: there is nothing to scrape" }}
{{- end }}
{{- if and .Values.monitoring.prometheusRule.enabled (not .Values.metrics.enabled) }}
{{- fail "monitoring.prometheusRule.enabled needs metrics.enabled: every rule would watch absent series" }}
{{- end }}
{{- if and .Values.webhook.certManager.enabled (not .Values.webhook.enabled) }}
{{- fail "webhook.certManager.enabled needs webhook.enabled: there is no webhook to serve the certificate" }}
{{- end }}
{{- if and .Values.nodeAgent.enabled (le (float64 .Values.nodeAgent.reportMaxAgeSeconds) (float64 .Values.nodeAgent.heartbeatSeconds)) }}
{{- fail "nodeAgent.reportMaxAgeSeconds must exceed nodeAgent.heartbeatSeconds: every quiet host's report would go stale between two heartbeats" }}
{{- end }}
{{- range (list .Values.chain.fundingLedger.name .Values.chain.registrationLedger.name) }}
{{- if hasPrefix "cocoon-node-" . }}
{{- fail (printf "ledger name %s: names starting cocoon-node- are node agents' reports, which a node agent may write" .) }}
{{- end }}
{{- end }}
{{- $pdb := .Values.podDisruptionBudget }}
{{- if and $pdb.enabled (eq (toString $pdb.minAvailable) "") (eq (toString $pdb.maxUnavailable) "") }}
{{- fail "podDisruptionBudget needs minAvailable or maxUnavailable" }}
{{- end }}
{{- if and $pdb.enabled (gt (int .Values.replicaCount) 1) (eq (toString $pdb.maxUnavailable) "") (not (kindIs "string" $pdb.minAvailable)) }}
{{- if ge (int $pdb.minAvailable) (int .Values.replicaCount) }}
{{- fail "podDisruptionBudget.minAvailable must be below replicaCount: otherwise no operator pod could ever be evicted (node drains would hang)" }}
{{- end }}
{{- end }}
{{- end }}
