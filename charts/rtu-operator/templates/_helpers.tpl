{{/* The chart name, or nameOverride. */}}
{{- define "rtu-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of every resource: fullnameOverride, else <release>-<chart> (or the release
alone when it already contains the chart name). */}}
{{- define "rtu-operator.fullname" -}}
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

{{- define "rtu-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "rtu-operator.labels" -}}
helm.sh/chart: {{ include "rtu-operator.chart" . }}
{{ include "rtu-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels selecting the operator pods (immutable in the Deployment: never add to these). */}}
{{- define "rtu-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rtu-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rtu-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rtu-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "rtu-operator.leaseName" -}}
{{- printf "%s-leader" (include "rtu-operator.fullname" .) }}
{{- end }}

{{- define "rtu-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The operator's rules in a watched namespace (or cluster-wide); shared by the ClusterRole
and the per-namespace Roles so the two never drift apart. Every rule says why it exists. */}}
{{- define "rtu-operator.rules" -}}
# Server-side apply is a patch; when the object does not exist yet the API server also checks
# "create", so each applied kind below has both.
# The two kinds the operator reconciles: read and watched (controllers and reflectors), and
# RealTimeUpdaters listed to find the siblings that claim the same projections.
- apiGroups: ["rtu.fastdata.dev"]
  resources: ["realtimeupdaters", "systemsofrecord"]
  verbs: ["get", "list", "watch"]
# Status subresources: the operator writes RealTimeUpdater status (conditions, replicas,
# configHash) and SystemOfRecord status (projection owners) with merge patches.
- apiGroups: ["rtu.fastdata.dev"]
  resources: ["realtimeupdaters/status", "systemsofrecord/status"]
  verbs: ["patch"]
# Secrets a SystemOfRecord references (Kafka and MongoDB credentials): read to hash their
# values into the pod template (a changed Secret rolls the workers) and watched as metadata to
# notice changes. Read-only: the operator never writes a Secret.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
# ConfigMaps: read and watched because SystemOfRecords reference schema and function
# ConfigMaps; written (server-side apply = patch) because each RealTimeUpdater gets a
# <name>-engine ConfigMap with the rendered engine config; deleted when no longer built.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The worker Service (<name>-metrics): owned, so watched; server-side applied; orphans deleted.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The worker Deployment: owned and watched, its status read for the RealTimeUpdater status,
# server-side applied, orphans deleted.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The worker PodDisruptionBudget: server-side applied when worker.podDisruptionBudget is
# enabled, deleted when it is disabled.
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Events on RealTimeUpdaters (refusals, invalid specs): created, and patched when the same
# event repeats (kube-rs Recorder, events.k8s.io/v1).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
