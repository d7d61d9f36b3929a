{{/*
The one Deployment every Flask service is rendered from: (dict "root" $ "name" "proxy" "svc" .Values.services.proxy)
gunicorn on :8080, /healthz (liveness), /readyz (readiness: checks dependencies), /metrics on its own
port (monitoring.metricsPort, the Service's `metrics` port, never routed by Ingress/Gateway) in Prometheus
multiprocess mode (an emptyDir), read-only root with emptyDirs for /tmp and data.
*/}}
{{- define "dicomlab.flaskDeployment" -}}
{{- $root := .root -}}
{{- $ctx := dict "root" $root "component" .name -}}
{{- $env := include (printf "dicomlab.env.%s" .name) (dict "root" $root "svc" .svc) -}}
{{- $persistence := .svc.persistence | default dict -}}
{{- $persistent := $persistence.enabled | default false -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "dicomlab.componentName" $ctx }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "dicomlab.labels" $ctx | nindent 4 }}
spec:
  {{- if not .svc.autoscaling.enabled }}
  replicas: {{ .svc.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    {{- if $persistent }}
    type: Recreate  # one pod owns the state volume (ReadWriteOnce): the old pod goes before the new one mounts it
    {{- else }}
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 1
    {{- end }}
  selector:
    matchLabels:
      {{- include "dicomlab.selectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "dicomlab.labels" $ctx | nindent 8 }}
        {{- with .svc.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include "dicomlab.configChecksum" (dict "Values" $root.Values "extra" .svc) }}
        {{- with .svc.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "dicomlab.serviceAccountName" (dict "root" $root "component" .name "sa" .svc.serviceAccount) }}
      automountServiceAccountToken: false
      {{- include "dicomlab.imagePullSecrets" $root | nindent 6 }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: 30
      {{- with .svc.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with .svc.initContainers }}
      initContainers:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .name }}
          image: {{ include "dicomlab.image" (dict "image" .svc.image "root" $root) | quote }}
          imagePullPolicy: {{ .svc.image.pullPolicy }}
          ports:
            - name: http
              containerPort: 8080
              protocol: TCP
            - name: metrics
              containerPort: {{ $root.Values.monitoring.metricsPort }}
              protocol: TCP
          env:
            - name: DICOMLAB_BIND
              value: "0.0.0.0:8080"
            - name: DICOMLAB_WORKERS
              value: {{ .svc.workers | quote }}
            - name: DICOMLAB_THREADS
              value: {{ .svc.threads | quote }}
            - name: DICOMLAB_METRICS_PORT
              value: {{ $root.Values.monitoring.metricsPort | quote }}
            - name: FORWARDED_ALLOW_IPS
              value: {{ $root.Values.forwardedAllowIps | join "," | quote }}
            - name: PROMETHEUS_MULTIPROC_DIR
              value: /var/run/prometheus-multiproc
            - name: TMPDIR
              value: /tmp
            {{- if $root.Values.objectStore.region }}
            - name: AWS_REGION
              value: {{ $root.Values.objectStore.region | quote }}
            {{- end }}
            {{- $env | nindent 12 }}
            {{- range $name, $value := .svc.env }}
            - name: {{ $name }}
              value: {{ $value | toString | quote }}
            {{- end }}
            {{- with .svc.extraEnvVars }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- with .svc.extraEnvVarsSecret }}
          envFrom:
            - secretRef:
                name: {{ . }}
          {{- end }}
          startupProbe:
            httpGet: {path: /healthz, port: http}
            periodSeconds: 2
            failureThreshold: 60
          livenessProbe:
            httpGet: {path: /healthz, port: http}
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          readinessProbe:
            httpGet: {path: /readyz, port: http}
            periodSeconds: 5
            timeoutSeconds: 5
            failureThreshold: 3
          resources:
            {{- toYaml .svc.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
            - {name: prometheus-multiproc, mountPath: /var/run/prometheus-multiproc}
            - {name: data, mountPath: /var/lib/dicomlab}
            {{- with .svc.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
        {{- with .svc.sidecars }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      volumes:
        - name: tmp
          emptyDir: {sizeLimit: 1Gi}
        - name: prometheus-multiproc
          emptyDir: {medium: Memory, sizeLimit: 64Mi}
        - name: data
          {{- if $persistent }}
          persistentVolumeClaim:
            claimName: {{ $persistence.existingClaim | default (printf "%s-state" (include "dicomlab.componentName" $ctx)) }}
          {{- else }}
          emptyDir: {sizeLimit: 2Gi}
          {{- end }}
        {{- with .svc.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with .svc.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .svc.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .svc.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if .svc.affinity }}
      affinity:
        {{- toYaml .svc.affinity | nindent 8 }}
      {{- else }}
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm:
                topologyKey: kubernetes.io/hostname
                labelSelector:
                  matchLabels:
                    {{- include "dicomlab.selectorLabels" $ctx | nindent 20 }}
      {{- end }}
{{- end -}}
