{{/* The objects' fixed name: the code looks them up by name (signing key, Lease, webhook configuration). */}}
{{- define "chaosguard.name" -}}chaosguard{{- end -}}

{{- define "chaosguard.labels" -}}
app.kubernetes.io/name: chaosguard
app.kubernetes.io/part-of: chaosguard
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "chaosguard.selectorLabels" -}}
app.kubernetes.io/name: chaosguard
{{- end -}}

{{- define "chaosguard.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "chaosguard.injectorImage" -}}
{{ .Values.injector.image.repository }}:{{ .Values.injector.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "chaosguard.stressorImage" -}}
{{- with .Values.stressor.image.repository -}}
{{ . }}:{{ $.Values.stressor.image.tag | default $.Values.injector.image.tag | default $.Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "chaosguard.webhookService" -}}chaosguard-webhook{{- end -}}
{{- define "chaosguard.webhookSecret" -}}
{{- .Values.webhook.existingSecret | default "chaosguard-webhook-tls" -}}
{{- end -}}
