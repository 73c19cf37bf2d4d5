{{/* Chart name, truncated for label values. */}}
{{- define "ebb.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped base name: the release name when it contains the chart name. */}}
{{- define "ebb.fullname" -}}
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

{{/* Name of the operator's Deployment, Service and RBAC objects. */}}
{{- define "ebb.operatorName" -}}
{{- printf "%s-operator" (include "ebb.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ebb.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of everything the chart installs. */}}
{{- define "ebb.labels" -}}
helm.sh/chart: {{ include "ebb.chart" . }}
app.kubernetes.io/name: {{ include "ebb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector of the operator's pods. */}}
{{- define "ebb.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "ebb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "ebb.operatorLabels" -}}
{{ include "ebb.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "ebb.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ebb.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The ebb image, for the operator and (through --image) its workloads. */}}
{{- define "ebb.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Namespace the operator watches; empty means all. */}}
{{- define "ebb.watchNamespace" -}}
{{- .Values.operator.watchNamespace | default "" }}
{{- end }}

{{/* Secret with the object store's credentials, if any. */}}
{{- define "ebb.objectStoreSecret" -}}
{{- if .Values.objectStore.existingSecret }}
{{- .Values.objectStore.existingSecret }}
{{- else if or .Values.objectStore.accessKeyId .Values.objectStore.secretAccessKey .Values.objectStore.region .Values.objectStore.endpoint }}
{{- printf "%s-object-store" (include "ebb.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Secret with the example database owner's password. */}}
{{- define "ebb.exampleOwnerSecret" -}}
{{- printf "%s-%s-owner" .Values.example.cluster.name .Values.example.database.name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* RBAC rules of what the operator reconciles and creates, wherever it watches. */}}
{{- define "ebb.operatorRules" -}}
- apiGroups: ["ebb.dev"]
  resources: ["ebbclusters", "databases"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["ebb.dev"]
  resources: ["ebbclusters/status", "databases/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["ebb.dev"]
  resources: ["ebbclusters/finalizers", "databases/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["statefulsets", "deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services", "pods", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Owner passwords: read one by one, never listed.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* Namespace of the example cluster and its Secrets: where the operator looks. */}}
{{- define "ebb.exampleNamespace" -}}
{{- default .Release.Namespace .Values.operator.watchNamespace }}
{{- end }}
