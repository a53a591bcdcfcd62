{{/*
Helpers of the optional batch part (batch-sparkapplication.yaml, batch-rbac.yaml).
Labels: deliberately not the service's selector labels, so the Service, PDB, NetworkPolicy and
HPA never count a Spark pod as a service pod.
*/}}
{{- define "credit-pd.batchLabels" -}}
helm.sh/chart: {{ include "credit-pd.chart" . }}
app.kubernetes.io/name: {{ include "credit-pd.name" . }}-batch
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: batch
app.kubernetes.io/part-of: credit-pd
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "credit-pd.batchServiceAccountName" -}}
{{- printf "%s-batch" (include "credit-pd.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Environment of the driver and executors: where the model store is (the driver resolves the tag
there; executors get the model broadcast), no usage tracking, and the region for S3.
*/}}
{{- define "credit-pd.batchEnv" -}}
- name: BENTOML_HOME
  value: {{ .Values.batch.bentomlHome | quote }}
- name: BENTOML_DO_NOT_TRACK
  value: "true"
{{- with .Values.batch.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- end }}
