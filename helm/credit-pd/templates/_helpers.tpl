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

{{/*
A serving setting of values `config` (credit_pd/serving/settings.py), or "" when unset.
*/}}
{{- define "credit-pd.setting" -}}
{{- $value := index .root.Values.config .name -}}
{{- if kindIs "invalid" $value }}{{ else }}{{ $value }}{{ end -}}
{{- end }}

{{/*
Shutdown and connection timing (values.yaml, "Shutdown timing"): the chart refuses values that
would cut requests during rollouts and scale-in, or make the ALB reuse connections the pods closed.
*/}}
{{- define "credit-pd.checkTiming" -}}
{{- $preStop := int .Values.preStopSleepSeconds }}
{{- $grace := int .Values.terminationGracePeriodSeconds }}
{{- $requestTimeout := include "credit-pd.setting" (dict "root" . "name" "request_timeout_s") }}
{{- $keepAlive := include "credit-pd.setting" (dict "root" . "name" "keepalive_timeout_s") }}
{{- if .Values.ingress.enabled }}
{{- $alb := .Values.ingress.alb }}
{{- if or (eq $requestTimeout "") (eq $keepAlive "") }}
{{- fail "ingress.enabled: set config.request_timeout_s and config.keepalive_timeout_s explicitly, so the chart can check them against ingress.alb.deregistrationDelaySeconds and ingress.alb.idleTimeoutSeconds" }}
{{- end }}
{{- if lt $preStop (int $alb.deregistrationDelaySeconds) }}
{{- fail (printf "preStopSleepSeconds (%d) must be at least ingress.alb.deregistrationDelaySeconds (%d): the pod must keep serving while the ALB drains it" $preStop (int $alb.deregistrationDelaySeconds)) }}
{{- end }}
{{- if lt (int $alb.deregistrationDelaySeconds) (int $requestTimeout) }}
{{- fail (printf "ingress.alb.deregistrationDelaySeconds (%d) must be at least config.request_timeout_s (%s): the ALB would cut requests the pod still completes" (int $alb.deregistrationDelaySeconds) $requestTimeout) }}
{{- end }}
{{- if le (float64 $keepAlive) (float64 $alb.idleTimeoutSeconds) }}
{{- fail (printf "config.keepalive_timeout_s (%s) must exceed ingress.alb.idleTimeoutSeconds (%d): otherwise the pod closes idle connections the ALB still reuses (502)" $keepAlive (int $alb.idleTimeoutSeconds)) }}
{{- end }}
{{- end }}
{{- $np := .Values.networkPolicy }}
{{- if and .Values.ingress.enabled $np.enabled (not $np.albSubnetCidrs) (or $np.monitoringNamespace $np.ingressFrom) }}
{{- fail "networkPolicy.albSubnetCidrs is empty while the NetworkPolicy restricts sources: the ALB could not reach the pods (list the CIDRs of ingress.alb.subnets)" }}
{{- end }}
{{- if and .Values.ingress.enabled $np.enabled (ne (len .Values.ingress.alb.subnets) (len $np.albSubnetCidrs)) }}
{{- fail (printf "ingress.alb.subnets (%d) and networkPolicy.albSubnetCidrs (%d) must list the same subnets" (len .Values.ingress.alb.subnets) (len $np.albSubnetCidrs)) }}
{{- end }}
{{- $needed := add $preStop (int (default "0" $requestTimeout)) 5 }}
{{- if lt $grace (int $needed) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least preStopSleepSeconds + config.request_timeout_s + 5 (%d): SIGKILL would cut requests accepted before SIGTERM" $grace (int $needed)) }}
{{- end }}
{{- end }}

{{/*
Authentication at the edge (ingress.auth.type jwt) uses the service's own auth settings, and
needs them complete: one issuer, checked by the ALB and again by the pods.
*/}}
{{- define "credit-pd.checkAuth" -}}
{{- if and .Values.ingress.enabled (eq .Values.ingress.auth.type "jwt") }}
{{- if not .Values.ingress.https.enabled }}
{{- fail "ingress.auth.type jwt needs ingress.https.enabled: the ALB verifies tokens only on HTTPS listeners" }}
{{- end }}
{{- $jwks := include "credit-pd.setting" (dict "root" . "name" "auth_jwks_url") }}
{{- if not (hasPrefix "https://" $jwks) }}
{{- fail (printf "ingress.auth.type jwt needs config.auth_jwks_url to be the issuer's https:// JWKS endpoint (the ALB fetches it), got %q" $jwks) }}
{{- end }}
{{- range $name := list "auth_issuer" "auth_audience" }}
{{- if eq (include "credit-pd.setting" (dict "root" $ "name" $name)) "" }}
{{- fail (printf "ingress.auth.type jwt needs config.%s: the pods verify the token too" $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
