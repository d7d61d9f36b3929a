{{/* Names ------------------------------------------------------------------------------------- */}}

{{- define "dicomlab.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dicomlab.fullname" -}}
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

{{- define "dicomlab.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* "<fullname>-<component>": call with (dict "root" $ "component" "proxy") */}}
{{- define "dicomlab.componentName" -}}
{{- printf "%s-%s" (include "dicomlab.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels: the recommended set; helm.sh/chart and version never go into selectors ------------- */}}

{{- define "dicomlab.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dicomlab.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "dicomlab.labels" -}}
{{ include "dicomlab.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: dicomlab
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ include "dicomlab.chart" .root }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Images: repository:tag, or repository:tag@digest when a digest is pinned. (dict "image" .. "root" $) */}}
{{/* global.imageRegistry replaces the registry of every image (a mirror): the first path part when it
names a host (has a dot or a port, or is localhost), else it is prefixed. */}}
{{- define "dicomlab.image" -}}
{{- $tag := .image.tag | default .root.Chart.AppVersion | toString -}}
{{- $repository := .image.repository -}}
{{- with (.root.Values.global | default dict).imageRegistry -}}
{{- $parts := splitList "/" $repository -}}
{{- $first := first $parts -}}
{{- if and (gt (len $parts) 1) (or (contains "." $first) (contains ":" $first) (eq $first "localhost")) -}}
{{- $repository = rest $parts | join "/" -}}
{{- end -}}
{{- $repository = printf "%s/%s" (trimSuffix "/" .) $repository -}}
{{- end -}}
{{- if .image.digest -}}
{{- printf "%s:%s@%s" $repository $tag .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "dicomlab.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Secrets and endpoints --------------------------------------------------------------------- */}}

{{- define "dicomlab.appSecretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-app" (include "dicomlab.fullname" .)) -}}
{{- end -}}

{{/* Orthanc's RegisteredUsers setting, {"<user>": "<password>"}, JSON-encoded whatever the characters:
(dict "username" "u" "password" "p"). Never pasted into a string by hand or by $(VAR) expansion. */}}
{{- define "dicomlab.orthancUsersJson" -}}
{{- dict .username .password | toJson -}}
{{- end -}}

{{- define "dicomlab.pgSecretName" -}}
{{- .Values.postgresql.auth.existingSecret | default (printf "%s-postgresql" (include "dicomlab.fullname" .)) -}}
{{- end -}}

{{- define "dicomlab.pgHost" -}}
{{- if eq .Values.postgresql.mode "internal" -}}
{{- include "dicomlab.componentName" (dict "root" . "component" "postgresql") -}}
{{- else -}}
{{- .Values.postgresql.external.host -}}
{{- end -}}
{{- end -}}

{{- define "dicomlab.pgPort" -}}
{{- if eq .Values.postgresql.mode "internal" -}}5432{{- else -}}{{ .Values.postgresql.external.port }}{{- end -}}
{{- end -}}

{{- define "dicomlab.orthancUrl" -}}
{{- printf "http://%s:%d" (include "dicomlab.componentName" (dict "root" . "component" "orthanc")) (int .Values.orthanc.httpPort) -}}
{{- end -}}

{{- define "dicomlab.publicUrl" -}}
{{- printf "%s://%s" .root.Values.publicHosts.scheme (get .root.Values.publicHosts .service) -}}
{{- end -}}

{{/* A secretKeyRef env entry: (dict "name" ENV "secret" NAME "key" KEY) */}}
{{- define "dicomlab.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
{{- end -}}

{{/* Security ---------------------------------------------------------------------------------- */}}

{{- define "dicomlab.containerSecurityContext" -}}
{{ toYaml .Values.containerSecurityContext }}
{{- end -}}

{{- define "dicomlab.serviceAccountName" -}}
{{- if .sa.create -}}
{{- .sa.name | default (include "dicomlab.componentName" (dict "root" .root "component" .component)) -}}
{{- else -}}
{{- .sa.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* Checksum of everything a pod's configuration is rendered from (ConfigMaps, generated Secrets) */}}
{{- define "dicomlab.configChecksum" -}}
{{- $parts := list (toJson .Values.secrets) (toJson .Values.postgresql) (toJson .Values.objectStore) (toJson .Values.publicHosts) (toJson .Values.orthanc.config) (toJson .Values.monitoring.pushgatewayUrl) -}}
{{- if .extra }}{{ $parts = append $parts (toJson .extra) }}{{ end -}}
{{- $parts | join "\n" | sha256sum -}}
{{- end -}}

{{/* validateValues: every rule adds one readable line; all failures are reported together ------- */}}
{{- define "dicomlab.validateValues" -}}
{{- $errors := list -}}
{{- $pg := .Values.postgresql -}}
{{- if not (has $pg.mode (list "external" "internal")) -}}
{{- $errors = append $errors (printf "postgresql.mode must be external or internal (got %q)" $pg.mode) -}}
{{- end -}}
{{- if eq $pg.mode "external" -}}
{{- if not $pg.external.host -}}
{{- $errors = append $errors "postgresql.external.host is required with postgresql.mode=external (or set postgresql.mode=internal for an evaluation install)" -}}
{{- end -}}
{{- if not $pg.auth.existingSecret -}}
{{- $errors = append $errors "postgresql.auth.existingSecret is required with postgresql.mode=external: a Secret with the database user name and password" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.ingress.enabled .Values.gateway.enabled -}}
{{- $errors = append $errors "choose one of ingress.enabled and gateway.enabled, not both" -}}
{{- end -}}
{{- if and .Values.gateway.enabled (not .Values.gateway.parentRefs) -}}
{{- $errors = append $errors "gateway.parentRefs must name at least one Gateway when gateway.enabled=true" -}}
{{- end -}}
{{- $modalityNames := list -}}
{{- range .Values.orthanc.dicomModalities -}}
{{- if has .name $modalityNames -}}
{{- $errors = append $errors (printf "orthanc.dicomModalities: the name %q is used twice" .name) -}}
{{- end -}}
{{- $modalityNames = append $modalityNames .name -}}
{{- end -}}
{{- if and .Values.orthanc.dicomService.enabled (not .Values.orthanc.dicomModalities) -}}
{{- $errors = append $errors "orthanc.dicomService.enabled needs at least one modality in orthanc.dicomModalities (without one the DICOM server is off)" -}}
{{- end -}}
{{- if and (gt (int .Values.orthanc.replicaCount) 1) (not (has "ReadWriteMany" .Values.orthanc.storage.accessModes)) (not .Values.orthanc.storage.existingClaim) -}}
{{- $errors = append $errors "orthanc.replicaCount > 1 needs a ReadWriteMany storage volume (orthanc.storage.accessModes) or an existingClaim" -}}
{{- end -}}
{{- if and .Values.services.proxy.enabled (not .Values.publicHosts.proxy) -}}
{{- $errors = append $errors "publicHosts.proxy is required: browsers reach Orthanc only through the proxy" -}}
{{- end -}}
{{- if and .Values.services.labeling.enabled (not .Values.services.proxy.enabled) -}}
{{- $errors = append $errors "services.labeling needs services.proxy: the labeling UI loads images through the proxy" -}}
{{- end -}}
{{- if $errors -}}
{{- fail (printf "\n\nVALUES VALIDATION:\n  - %s\n" ($errors | join "\n  - ")) -}}
{{- end -}}
{{- end -}}
