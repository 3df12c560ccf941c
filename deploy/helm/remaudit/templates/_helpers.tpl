{{/* Names */}}
{{- define "remaudit.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "remaudit.fullname" -}}
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

{{- define "remaudit.serverName" -}}
{{- include "remaudit.fullname" . }}
{{- end }}

{{- define "remaudit.controllerName" -}}
{{- printf "%s-controller" (include "remaudit.fullname" . | trunc 52 | trimSuffix "-") }}
{{- end }}

{{- define "remaudit.cnpgName" -}}
{{- printf "%s-pg" (include "remaudit.fullname" . | trunc 40 | trimSuffix "-") }}
{{- end }}

{{- define "remaudit.serverServiceAccount" -}}
{{- if .Values.server.serviceAccount.create }}
{{- default (include "remaudit.serverName" .) .Values.server.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.server.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "remaudit.controllerServiceAccount" -}}
{{- if .Values.controller.serviceAccount.create }}
{{- default (include "remaudit.controllerName" .) .Values.controller.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.controller.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "remaudit.leaseName" -}}
{{- default (include "remaudit.controllerName" .) .Values.controller.leaseName }}
{{- end }}

{{/* Labels */}}
{{- define "remaudit.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "remaudit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: remaudit
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "remaudit.serverSelectorLabels" -}}
app.kubernetes.io/name: {{ include "remaudit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "remaudit.controllerSelectorLabels" -}}
app.kubernetes.io/name: {{ include "remaudit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{/* The image, by digest when one is given. */}}
{{- define "remaudit.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag | toString }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Facts derived from the values. */}}
{{- define "remaudit.tlsEnabled" -}}
{{- if .Values.tls.existingSecret }}true{{ end }}
{{- end }}

{{/* Mutual TLS that refuses clients without a certificate: probes cannot use HTTP. */}}
{{- define "remaudit.mtlsRequired" -}}
{{- if and .Values.tls.clientCA.existingSecret (not .Values.tls.clientCA.optional) }}true{{ end }}
{{- end }}

{{- define "remaudit.scheme" -}}
{{- if include "remaudit.tlsEnabled" . }}https{{ else }}http{{ end }}
{{- end }}

{{- define "remaudit.serverURL" -}}
{{- printf "%s://%s.%s.svc:%v" (include "remaudit.scheme" .) (include "remaudit.serverName" .) .Release.Namespace .Values.server.port }}
{{- end }}

{{- define "remaudit.databaseSecret" -}}
{{- if .Values.postgresql.cloudnativepg.enabled }}
{{- printf "%s-app" (include "remaudit.cnpgName" .) }}
{{- else }}
{{- .Values.database.existingSecret }}
{{- end }}
{{- end }}

{{- define "remaudit.databaseKey" -}}
{{- if .Values.postgresql.cloudnativepg.enabled }}uri{{ else }}{{ .Values.database.urlKey }}{{ end }}
{{- end }}

{{- define "remaudit.serverCASecret" -}}
{{- default .Values.tls.existingSecret .Values.controller.serverCA.existingSecret }}
{{- end }}

{{/* Mount paths. */}}
{{- define "remaudit.configDir" -}}/etc/remaudit/config{{- end }}
{{- define "remaudit.configFile" -}}/etc/remaudit/config/remaudit.toml{{- end }}

{{/*
Refuses values that would deploy something broken or open, each with what to
do instead. Included by the ConfigMap, which is always rendered. Types, enums
and unknown keys are values.schema.json's to refuse.
*/}}
{{- define "remaudit.validate" -}}
{{- $v := .Values }}
{{- $tag := default .Chart.AppVersion $v.image.tag | toString }}
{{- if and (eq $tag "latest") (not $v.image.digest) }}
{{- fail "image.tag \"latest\" is refused: pin a version (or set image.digest) so that every replica runs the same build" }}
{{- end }}
{{- if and $v.postgresql.cloudnativepg.enabled $v.database.existingSecret }}
{{- fail "database.existingSecret and postgresql.cloudnativepg.enabled both name the database: set database.existingSecret=\"\" to use the CloudNativePG cluster, or disable postgresql.cloudnativepg" }}
{{- end }}
{{- if not (or $v.postgresql.cloudnativepg.enabled $v.database.existingSecret) }}
{{- fail "no database: set database.existingSecret to a Secret holding the PostgreSQL URL (key database.urlKey), or set postgresql.cloudnativepg.enabled=true" }}
{{- end }}
{{- if and (not $v.postgresql.cloudnativepg.enabled) (not $v.database.urlKey) }}
{{- fail "database.urlKey is empty: name the key of database.existingSecret that holds the PostgreSQL URL" }}
{{- end }}
{{- $authenticators := or $v.auth.kubernetes.enabled $v.auth.tokens.existingSecret (and $v.tls.clientCA.existingSecret $v.tls.clientRoles) }}
{{- if $v.auth.insecureNoAuth }}
{{- if $authenticators }}
{{- fail "auth.insecureNoAuth turns authentication off, but an authenticator is configured too (auth.kubernetes.enabled, auth.tokens.existingSecret or tls.clientRoles): choose one" }}
{{- end }}
{{- if $v.auth.anonymousWriter }}
{{- fail "auth.insecureNoAuth already lets anyone do anything: drop auth.anonymousWriter, or drop auth.insecureNoAuth to let anonymous callers only write" }}
{{- end }}
{{- else if not (or $authenticators $v.auth.anonymousWriter) }}
{{- fail "the service listens beyond loopback without authentication: enable auth.kubernetes.enabled, set auth.tokens.existingSecret, or tls.clientCA.existingSecret with tls.clientRoles; auth.insecureNoAuth=true leaves every route open" }}
{{- end }}
{{- if and $v.auth.kubernetes.enabled (not $v.auth.kubernetes.audiences) }}
{{- fail "auth.kubernetes.audiences is empty: tokens must be bound to at least one audience (default remaudit)" }}
{{- end }}
{{- if and $v.tls.clientCA.existingSecret (not $v.tls.existingSecret) }}
{{- fail "tls.clientCA.existingSecret needs TLS: set tls.existingSecret to a Secret with tls.crt and tls.key" }}
{{- end }}
{{- if and $v.tls.clientRoles (not $v.tls.clientCA.existingSecret) }}
{{- fail "tls.clientRoles maps client certificates, but no client CA verifies them: set tls.clientCA.existingSecret" }}
{{- end }}
{{- if $v.retention.enabled }}
{{- if not $v.retention.archive.url }}
{{- fail "retention.enabled needs retention.archive.url (s3://bucket/prefix): the container's filesystem is read-only, and archive files must outlive the pod" }}
{{- end }}
{{- end }}
{{- with $v.retention.archive.url }}
{{- if not (or (hasPrefix "s3://" .) (hasPrefix "file:///" .)) }}
{{- fail (printf "retention.archive.url %q: use s3://bucket/prefix, or file:///dir on a volume mounted with server.extraVolumes" .) }}
{{- end }}
{{- end }}
{{- if $v.server.autoscaling.enabled }}
{{- if lt (int $v.server.autoscaling.maxReplicas) (int $v.server.autoscaling.minReplicas) }}
{{- fail "server.autoscaling.maxReplicas is below minReplicas" }}
{{- end }}
{{- if and $v.server.podDisruptionBudget.enabled (lt (int $v.server.autoscaling.minReplicas) 2) }}
{{- fail "server.autoscaling.minReplicas must be at least 2 with server.podDisruptionBudget.enabled: one replica and minAvailable 1 block every node drain" }}
{{- end }}
{{- else if and $v.server.podDisruptionBudget.enabled (lt (int $v.server.replicas) 2) }}
{{- fail "server.replicas must be at least 2 with server.podDisruptionBudget.enabled: one replica and minAvailable 1 block every node drain (disable the budget to run one)" }}
{{- end }}
{{- if $v.controller.enabled }}
{{- $credential := or $v.auth.insecureNoAuth $v.auth.anonymousWriter $v.auth.kubernetes.enabled $v.controller.token.existingSecret (and $v.controller.clientCertificate.existingSecret $v.tls.clientRoles) }}
{{- if not $credential }}
{{- fail "the controller has no credential the service accepts: set controller.token.existingSecret (a token from the tokens file, role writer), enable auth.kubernetes, or give it a client certificate (controller.clientCertificate.existingSecret) mapped in tls.clientRoles" }}
{{- end }}
{{- if and (include "remaudit.mtlsRequired" .) (not $v.controller.clientCertificate.existingSecret) }}
{{- fail "mutual TLS refuses clients without a certificate, the controller included: set controller.clientCertificate.existingSecret, or tls.clientCA.optional=true" }}
{{- end }}
{{- if and $v.controller.clientCertificate.existingSecret (not $v.tls.existingSecret) }}
{{- fail "controller.clientCertificate.existingSecret is only used over TLS: set tls.existingSecret" }}
{{- end }}
{{- end }}
{{- end }}

{{/* A TOML value: strings as JSON strings (valid TOML basic strings), numbers
(YAML gives floats) as integers, lists element by element, booleans as is. */}}
{{- define "remaudit.toml" -}}
{{- if kindIs "string" . }}{{ toJson . }}{{ else if kindIs "float64" . }}{{ int64 . }}{{ else if kindIs "slice" . }}[{{ range $i, $e := . }}{{ if $i }}, {{ end }}{{ include "remaudit.toml" $e }}{{ end }}]{{ else }}{{ . }}{{ end }}
{{- end }}
