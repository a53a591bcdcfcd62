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

{{/*
The batch part renders only from a real run's values: no placeholder image, bucket or role, and a
pinned model (the one the service serves), so what is applied is what runs.
*/}}
{{- define "credit-pd.checkBatch" -}}
{{- $b := .Values.batch }}
{{- range $name, $value := dict "batch.image.repository" $b.image.repository "batch.image.tag" $b.image.tag "batch.input" $b.input "batch.output" $b.output "batch.awsRoleArn" $b.awsRoleArn "batch.modelTag" $b.modelTag }}
{{- if not $value }}
{{- fail (printf "batch.enabled needs %s (a real run's value; docs/batch.md)" $name) }}
{{- end }}
{{- end }}
{{- if or (not (contains ":" $b.modelTag)) (hasSuffix ":latest" $b.modelTag) }}
{{- fail (printf "batch.modelTag must pin a version (credit_pd_model:<version>), got %q" $b.modelTag) }}
{{- end }}
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
