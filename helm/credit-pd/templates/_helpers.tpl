{{/*
Expand the name of the chart.
*/}}
{{- define "credit-pd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "credit-pd.fullname" -}}
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

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "credit-pd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "credit-pd.labels" -}}
helm.sh/chart: {{ include "credit-pd.chart" . }}
{{ include "credit-pd.selectorLabels" . }}
app.kubernetes.io/version: {{ include "credit-pd.imageTag" . | trunc 63 | quote }}
app.kubernetes.io/component: api
app.kubernetes.io/part-of: credit-pd
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels of the helm test resources: deliberately not the selector labels, so the Service, PDB,
NetworkPolicy and HPA never count the test pod as a service pod.
*/}}
{{- define "credit-pd.testLabels" -}}
helm.sh/chart: {{ include "credit-pd.chart" . }}
app.kubernetes.io/name: {{ include "credit-pd.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
app.kubernetes.io/part-of: credit-pd
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels
*/}}
{{- define "credit-pd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "credit-pd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Create the name of the service account to use
*/}}
{{- define "credit-pd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "credit-pd.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image tag: image.tag, else the chart's appVersion.
*/}}
{{- define "credit-pd.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/*
Full image reference: repository:tag, or repository:tag@digest when a digest is pinned.
*/}}
{{- define "credit-pd.image" -}}
{{- $ref := printf "%s:%s" .Values.image.repository (include "credit-pd.imageTag" .) }}
{{- if .Values.image.digest }}
{{- $ref = printf "%s@%s" $ref .Values.image.digest }}
{{- end }}
{{- $ref }}
{{- end }}

{{/*
Image of the helm test pod: tests.image, else the service image.
*/}}
{{- define "credit-pd.testImage" -}}
{{- if .Values.tests.image.repository }}
{{- printf "%s:%s" .Values.tests.image.repository (required "tests.image.tag is required with tests.image.repository" .Values.tests.image.tag) }}
{{- else }}
{{- include "credit-pd.image" . }}
{{- end }}
{{- end }}

{{/*
Environment shared by the service container and the model-import initContainer: a writable
BENTOML_HOME and TMPDIR on emptyDirs, no usage tracking (no egress, no client_id file), no
bytecode writes on the read-only root filesystem.
*/}}
{{- define "credit-pd.runtimeEnv" -}}
- name: BENTOML_HOME
  value: {{ .Values.bento.home | quote }}
- name: TMPDIR
  value: /tmp
- name: BENTOML_DO_NOT_TRACK
  value: "true"
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
{{- end }}
