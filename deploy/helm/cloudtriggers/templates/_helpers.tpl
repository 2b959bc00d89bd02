{{/* Names, labels and the RBAC rules shared by the templates. */}}

{{- define "cloudtriggers.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the release name, unless it already contains the chart name. */}}
{{- define "cloudtriggers.fullname" -}}
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

{{- define "cloudtriggers.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cloudtriggers.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cloudtriggers.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "cloudtriggers.labels" -}}
helm.sh/chart: {{ include "cloudtriggers.chart" . }}
{{ include "cloudtriggers.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: cloudtriggers
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "cloudtriggers.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cloudtriggers.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "cloudtriggers.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "cloudtriggers.leaseName" -}}
{{- default (include "cloudtriggers.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
What the operator does in the namespaces it watches; tests/deploy/test_rbac.py checks these rules
against the API requests the operator makes.
*/}}
{{- define "cloudtriggers.namespacedRules" -}}
# Triggers: kopf lists and watches them and patches their metadata (finalizer, its annotations);
# the reconciler reads one at the start of each pass.
- apiGroups: ["cloudtriggers.io"]
  resources: ["triggers"]
  verbs: ["get", "list", "watch", "patch"]
# Conditions, the provider id and the create intent, through the status subresource.
- apiGroups: ["cloudtriggers.io"]
  resources: ["triggers/status"]
  verbs: ["patch"]
# Read credentials; create and update the output Secrets (token, url), which the Trigger owns; hold
# a credentials Secret (our finalizer and label) while a Trigger uses it. list: the sweep finds the
# held ones by label, reading their metadata only. list and watch: the output Secrets (our label,
# a server-side selector) are watched, so that a drift check reads none.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/* Cluster-scoped reads, in either mode. */}}
{{- define "cloudtriggers.clusterRules" -}}
# Whether a Trigger's namespace is terminating (a delete that keeps failing is then released); with
# watchNamespaces, kopf also lists and watches namespaces to follow their creation and deletion.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: {{ if .Values.watchNamespaces }}["get", "list", "watch"]{{ else }}["get"]{{ end }}
# kopf follows CRDs appearing and changing, so a Trigger CRD installed later is still served.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end }}
