{{/*
Names, labels and the derived settings every template shares. Names and labels come
only from here (STYLE.md, rule 13).
*/}}

{{- define "lumberd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lumberd.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "lumberd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lumberd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lumberd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "lumberd.labels" -}}
helm.sh/chart: {{ include "lumberd.chart" . }}
{{ include "lumberd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: log-ingest
{{- end -}}

{{- define "lumberd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lumberd.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "lumberd.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Paths inside the container; the image (Dockerfile) uses the same. */}}
{{- define "lumberd.binary" -}}/usr/local/bin/lumberd{{- end -}}
{{- define "lumberd.configPath" -}}/etc/lumberd/lumberd.toml{{- end -}}
{{- define "lumberd.dataDir" -}}/var/lib/lumberd{{- end -}}
{{- define "lumberd.tlsDir" -}}/etc/lumberd/tls{{- end -}}
{{- define "lumberd.esCaDir" -}}/etc/lumberd/es-ca{{- end -}}

{{/* Secret names: the existing one, or the dev one the chart creates. */}}
{{- define "lumberd.tlsSecretName" -}}
{{- if .Values.tls.create.enabled -}}
{{- printf "%s-tls" (include "lumberd.fullname" .) -}}
{{- else -}}
{{- .Values.tls.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "lumberd.esAuthSecretName" -}}
{{- if .Values.elasticsearch.auth.create.enabled -}}
{{- printf "%s-es-auth" (include "lumberd.fullname" .) -}}
{{- else -}}
{{- .Values.elasticsearch.auth.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* Whether client certificates are verified, which needs the client CA. */}}
{{- define "lumberd.tlsClientCa" -}}
{{- if and .Values.tls.enabled (has .Values.tls.clientAuth (list "optional" "required")) -}}true{{- end -}}
{{- end -}}

{{/*
A lumberd duration ("500ms", "20s", "5m", "1h30m") in seconds, as a string (include
returns strings; callers convert with float64). Fails on a form it cannot read, so a
grace-period check never passes on a value it did not understand.
*/}}
{{- define "lumberd.durationSeconds" -}}
{{- $s := toString . | trim -}}
{{- if not (regexMatch "^([0-9]+(ms|s|m|h|d) *)+$" $s) -}}
{{- fail (printf "lumberd: duration %q: write it as a number and a unit (ms, s, m, h, d), e.g. \"20s\" or \"1m30s\"" $s) -}}
{{- end -}}
{{- $units := dict "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 "d" 86400.0 -}}
{{- $total := 0.0 -}}
{{- range regexFindAll "[0-9]+(ms|s|m|h|d)" $s -1 -}}
{{- $n := regexFind "^[0-9]+" . -}}
{{- $total = addf $total (mulf (float64 $n) (get $units (trimPrefix $n .))) -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{/*
The keys of one configuration section as TOML, in key order. toJson writes strings,
numbers (without Go's exponent form), booleans and arrays in forms TOML reads the same
way; a null value is left out so lumberd's default applies.
*/}}
{{- define "lumberd.tomlKeys" -}}
{{- $lines := list -}}
{{- range $key, $value := . -}}
{{- if not (kindIs "invalid" $value) -}}
{{- $lines = append $lines (printf "%s = %s" $key (toJson $value)) -}}
{{- end -}}
{{- end -}}
{{- join "\n" $lines -}}
{{- end -}}

{{/* Label matchers for lumberd's series in alerts: what the chart's ServiceMonitor produces. */}}
{{- define "lumberd.ruleSelector" -}}
{{- default (printf "job=%q,namespace=%q" (include "lumberd.fullname" .) .Release.Namespace) .Values.prometheusRule.selector -}}
{{- end -}}

{{/* "true" when each pod gets its own claim: the workload is a StatefulSet. */}}
{{- define "lumberd.statefulSet" -}}
{{- if and .Values.persistence.enabled (not .Values.persistence.existingClaim) -}}true{{- end -}}
{{- end -}}

{{/* The workload's kind, for the HPA's scaleTargetRef. */}}
{{- define "lumberd.workloadKind" -}}
{{- if include "lumberd.statefulSet" . -}}StatefulSet{{- else -}}Deployment{{- end -}}
{{- end -}}
