{{/*
Names. Everything the chart creates is named after the release (fullname), so two releases in
one cluster do not collide; "layer4-lb" installed as release "layer4-lb" is plain "layer4-lb".
*/}}
{{- define "layer4-lb.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "layer4-lb.fullname" -}}
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

{{- define "layer4-lb.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels (app.kubernetes.io/*) on every object. */}}
{{- define "layer4-lb.labels" -}}
helm.sh/chart: {{ include "layer4-lb.chart" . }}
{{ include "layer4-lb.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: layer4-lb
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The DaemonSet's selector: never changes across upgrades (it is immutable). */}}
{{- define "layer4-lb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "layer4-lb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "layer4-lb.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "layer4-lb.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Lease the controllers elect their status writer with; the Role names it. */}}
{{- define "layer4-lb.leaseName" -}}
{{- default (printf "%s-controller" (include "layer4-lb.fullname" .)) .Values.controller.leaseName }}
{{- end }}

{{- define "layer4-lb.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Paths shared by the two containers. */}}
{{- define "layer4-lb.socketDir" -}}/run/layer4-lb{{- end }}
{{- define "layer4-lb.socket" -}}/run/layer4-lb/control.sock{{- end }}
{{- define "layer4-lb.binderSocket" -}}/run/layer4-lb/binder.sock{{- end }}
{{/* The handover socket, in the node directory the old and the new pod both mount. */}}
{{- define "layer4-lb.handoverDir" -}}/run/layer4-lb-handover{{- end }}
{{- define "layer4-lb.handoverSocket" -}}/run/layer4-lb-handover/handover.sock{{- end }}
{{- define "layer4-lb.handoverHostPath" -}}
{{- printf "%s/%s.%s" (trimSuffix "/" .Values.dataplane.handover.hostDir) .Release.Namespace (include "layer4-lb.fullname" .) }}
{{- end }}

{{/*
The controller's HTTP address (/healthz, /readyz, /metrics). "hostIP" becomes the node's primary
address through the downward API ($(HOST_IP), status.hostIP); a literal IP is used as it is
(IPv6 in brackets).
*/}}
{{- define "layer4-lb.controllerHttpHost" -}}
{{- if eq .Values.controller.http.host "hostIP" }}$(HOST_IP)
{{- else if contains ":" .Values.controller.http.host }}[{{ .Values.controller.http.host }}]
{{- else }}{{ .Values.controller.http.host }}
{{- end }}
{{- end }}

{{/* True when the controller's HTTP server listens on loopback only. */}}
{{- define "layer4-lb.controllerHttpLoopback" -}}
{{- $h := .Values.controller.http.host }}
{{- if or (hasPrefix "127." $h) (eq $h "::1") }}true{{ end }}
{{- end }}

{{/* The dataplane's metrics port ("" when metrics are off), and whether it is on loopback. */}}
{{- define "layer4-lb.dataplaneMetricsPort" -}}
{{- with .Values.dataplane.metrics.address }}{{ last (splitList ":" .) }}{{ end }}
{{- end }}

{{- define "layer4-lb.dataplaneMetricsLoopback" -}}
{{- $a := .Values.dataplane.metrics.address }}
{{- if or (hasPrefix "127." $a) (hasPrefix "[::1]:" $a) }}true{{ end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the preStop sleep, then the drain (drain_timeout_ms, rounded up),
then 5 s for the process to exit. A value set by hand must not be shorter.
*/}}
{{- define "layer4-lb.minGracePeriod" -}}
{{- $drain := div (add .Values.dataplane.drainTimeoutMs 999) 1000 }}
{{- add .Values.dataplane.preStopSleepSeconds $drain 5 }}
{{- end }}

{{- define "layer4-lb.gracePeriod" -}}
{{- $min := int (include "layer4-lb.minGracePeriod" .) }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- $min }}
{{- else if lt (int .Values.terminationGracePeriodSeconds) $min }}
{{- fail (printf "terminationGracePeriodSeconds %d is shorter than dataplane.preStopSleepSeconds + dataplane.drainTimeoutMs + 5 s = %d s: the kubelet would kill open connections in the middle of the drain" (int .Values.terminationGracePeriodSeconds) $min) }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Where the pods may run: the DaemonSet and the helm test pod share it. */}}
{{- define "layer4-lb.placement" -}}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
