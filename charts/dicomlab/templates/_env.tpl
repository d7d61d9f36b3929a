{{/*
Per-service environment, included by the shared Deployment helper as "dicomlab.env.<service>".
Variable names follow each service's config dataclass (DICOMLAB_<SERVICE>__<FIELD>, "__" nests);
tests/deploy compares them with dicomlab_core.config.describe_config so they cannot drift.
Secrets only ever arrive through secretKeyRef (or $(VAR) references to such entries).
*/}}

{{/* Orthanc connection, for any service prefix: (dict "root" $ "prefix" "DICOMLAB_PROXY") */}}
{{- define "dicomlab.env.orthanc" -}}
{{- $secret := include "dicomlab.appSecretName" .root -}}
- name: {{ .prefix }}__ORTHANC__URL
  value: {{ include "dicomlab.orthancUrl" .root | quote }}
{{ include "dicomlab.secretEnv" (dict "name" (printf "%s__ORTHANC__USERNAME" .prefix) "secret" $secret "key" "orthanc-username") }}
{{ include "dicomlab.secretEnv" (dict "name" (printf "%s__ORTHANC__PASSWORD" .prefix) "secret" $secret "key" "orthanc-password") }}
{{- end -}}

{{- define "dicomlab.env.proxy" -}}
{{- $secret := include "dicomlab.appSecretName" .root -}}
{{- $origins := list -}}
{{- if .root.Values.services.labeling.enabled -}}
{{- $origins = append $origins (include "dicomlab.publicUrl" (dict "root" .root "service" "labeling")) -}}
{{- end -}}
{{- $origins = concat $origins .svc.allowedOrigins | uniq -}}
{{ include "dicomlab.env.orthanc" (dict "root" .root "prefix" "DICOMLAB_PROXY") }}
{{ include "dicomlab.secretEnv" (dict "name" "DICOMLAB_PROXY__TOKEN_KEYS" "secret" $secret "key" "token-keys") }}
{{ include "dicomlab.secretEnv" (dict "name" "DICOMLAB_PROXY__SERVICE_TOKENS" "secret" $secret "key" "service-token") }}
- name: DICOMLAB_PROXY__ALLOWED_ORIGINS
  value: {{ $origins | join "," | quote }}
- name: DICOMLAB_PROXY__PUBLIC_URL
  value: {{ include "dicomlab.publicUrl" (dict "root" .root "service" "proxy") | quote }}
{{- end -}}

{{- define "dicomlab.env.manifest" -}}
{{- $secret := include "dicomlab.appSecretName" .root -}}
{{ include "dicomlab.env.orthanc" (dict "root" .root "prefix" "DICOMLAB_MANIFEST") }}
- name: DICOMLAB_MANIFEST__STORE_URL
  value: {{ .root.Values.objectStore.url | quote }}
- name: DICOMLAB_MANIFEST__EXTRA_READ_STORES
  value: {{ .root.Values.objectStore.extraReadStores | join "," | quote }}
{{ include "dicomlab.secretEnv" (dict "name" "DICOMLAB_MANIFEST__PATIENT_KEY_SECRET" "secret" $secret "key" "patient-key-secret") }}
{{ include "dicomlab.secretEnv" (dict "name" "DICOMLAB_MANIFEST__SERVICE_TOKEN" "secret" $secret "key" "service-token") }}
{{- end -}}

{{- define "dicomlab.env.labeling" -}}
{{- $secret := include "dicomlab.appSecretName" .root -}}
{{- $pg := .root.Values.postgresql -}}
{{ include "dicomlab.env.orthanc" (dict "root" .root "prefix" "DICOMLAB_LABELING") }}
{{ include "dicomlab.secretEnv" (dict "name" "DICOMLAB_LABELING__TOKEN_KEYS" "secret" $secret "key" "token-keys") }}
{{ include "dicomlab.secretEnv" (dict "name" "DICOMLAB_LABELING__SESSION_SECRET" "secret" $secret "key" "session-secret") }}
{{ include "dicomlab.secretEnv" (dict "name" "DICOMLAB_LABELING__GT__SERVICE_TOKEN" "secret" $secret "key" "service-token") }}
{{- if .svc.adminUsername }}
- name: DICOMLAB_LABELING__AUTH__ADMIN_USERNAME
  value: {{ .svc.adminUsername | quote }}
{{ include "dicomlab.secretEnv" (dict "name" "DICOMLAB_LABELING__AUTH__ADMIN_PASSWORD" "secret" $secret "key" "admin-password") }}
{{- end }}
{{- if .svc.databaseUrlSecret.name }}
{{ include "dicomlab.secretEnv" (dict "name" "DICOMLAB_LABELING__DATABASE_URL" "secret" .svc.databaseUrlSecret.name "key" .svc.databaseUrlSecret.key) }}
{{- else }}
{{ include "dicomlab.secretEnv" (dict "name" "DICOMLAB_DB_USER" "secret" (include "dicomlab.pgSecretName" .root) "key" $pg.auth.usernameKey) }}
{{ include "dicomlab.secretEnv" (dict "name" "DICOMLAB_DB_PASSWORD" "secret" (include "dicomlab.pgSecretName" .root) "key" $pg.auth.passwordKey) }}
{{- /* Kubernetes expands $(VAR) from the entries above at container start: no secret in the manifest. */}}
- name: DICOMLAB_LABELING__DATABASE_URL
  value: {{ printf "postgresql+psycopg://$(DICOMLAB_DB_USER):$(DICOMLAB_DB_PASSWORD)@%s:%s/%s?sslmode=%s" (include "dicomlab.pgHost" .root) (include "dicomlab.pgPort" .root) $pg.databases.labeling (ternary "disable" $pg.external.sslMode (eq $pg.mode "internal")) | quote }}
{{- end }}
- name: DICOMLAB_LABELING__STORE_URL
  value: {{ .root.Values.objectStore.url | quote }}
- name: DICOMLAB_LABELING__EXTRA_READ_STORES
  value: {{ .root.Values.objectStore.extraReadStores | join "," | quote }}
{{- /* Login limits key on the client address: believe X-Forwarded-For from the same ingress pods gunicorn trusts. */}}
- name: DICOMLAB_LABELING__AUTH__FORWARDED_FOR_PROXIES
  value: {{ .root.Values.forwardedAllowIps | join "," | quote }}
- name: DICOMLAB_LABELING__PROXY_PUBLIC_URL
  value: {{ include "dicomlab.publicUrl" (dict "root" .root "service" "proxy") | quote }}
- name: DICOMLAB_LABELING__PUBLIC_URL
  value: {{ include "dicomlab.publicUrl" (dict "root" .root "service" "labeling") | quote }}
- name: DICOMLAB_LABELING__DATA_DIR
  value: /var/lib/dicomlab/labeling
{{- end -}}
