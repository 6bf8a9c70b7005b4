{{/* The image every modelmesh component runs. */}}
{{- define "modelmesh.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Labels of everything this chart makes. */}}
{{- define "modelmesh.labels" -}}
app.kubernetes.io/name: modelmesh
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{/* The etcd secret's name. */}}
{{- define "modelmesh.etcdSecret" -}}
{{ .Values.etcd.existingSecret | default "model-serving-etcd" }}
{{- end -}}

{{/* ClusterServingRuntime, or ServingRuntime in namespace scope. */}}
{{- define "modelmesh.runtimeKind" -}}
{{ if .Values.namespaceScope }}ServingRuntime{{ else }}ClusterServingRuntime{{ end }}
{{- end -}}
