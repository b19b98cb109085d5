{{- define "training.resources" -}}
{{- $gpu := .Values.global.gpu.resourceName -}}
requests:
  {{- toYaml .Values.resources.requests | nindent 2 }}
  {{- if gt (int .Values.gpusPerNode) 0 }}
  {{ $gpu }}: {{ .Values.gpusPerNode }}
  {{- end }}
limits:
  {{- toYaml .Values.resources.limits | nindent 2 }}
  {{- if gt (int .Values.gpusPerNode) 0 }}
  {{ $gpu }}: {{ .Values.gpusPerNode }}
  {{- end }}
{{- end }}
