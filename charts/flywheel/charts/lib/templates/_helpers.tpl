{{/*
Shared helpers. Named templates are global in a Helm chart tree, so every flywheel subchart
uses these. Arguments are passed as dicts: (dict "ctx" $ "component" "mlflow" ...).
*/}}

{{- define "flywheel.labels" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/part-of: flywheel
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "flywheel.selectorLabels" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- end }}

{{/* Platform image (our code): global.image, pinned by digest when one is given
(`make deploy` passes the digest it just pushed). */}}
{{- define "flywheel.image" -}}
{{- $img := .Values.global.image -}}
{{- if $img.digest -}}
{{ printf "%s@%s" $img.repository $img.digest | quote }}
{{- else -}}
{{ printf "%s:%s" $img.repository $img.tag | quote }}
{{- end -}}
{{- end }}

{{/* An image reference "repository:tag[@digest]" from {repository, tag, digest}. A digest
pins the exact bytes: set one for every third-party image in production (the dry run
lists the ones without; global.requireImageDigests makes them an error). */}}
{{- define "flywheel.imageRef" -}}
{{- if .digest -}}
{{ printf "%s:%s@%s" .repository .tag .digest | quote }}
{{- else -}}
{{ printf "%s:%s" .repository .tag | quote }}
{{- end -}}
{{- end }}

{{/*
Settings, by reference: the platform ConfigMap (templates/platform.yaml: URLs, names,
modes; no secrets) and the Secret of the workload's own identity, flywheel-<identity>
(templates/secrets.yaml: its MLflow login, the bucket-scoped S3 keys and what else that
identity needs; the subchart's value mlflowIdentity, default "reader"; names in
src/flywheel/names.py). Every flywheel workload takes its settings this way only.
*/}}
{{- define "flywheel.envFrom.platform" -}}
envFrom:
  - configMapRef:
      name: flywheel-platform
  - secretRef:
      name: {{ printf "flywheel-%s" (.Values.mlflowIdentity | default "reader") }}
{{- end }}

{{/* Pod-level security context. Args: uid (int). */}}
{{- define "flywheel.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container-level security context. Args: readOnlyRoot (bool, default true). */}}
{{- define "flywheel.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: {{ if hasKey . "readOnlyRoot" }}{{ .readOnlyRoot }}{{ else }}true{{ end }}
capabilities:
  drop: ["ALL"]
{{- end }}

{{/*
A generated secret value: the one already in the cluster (kept on upgrade), else a fresh
random one. `lookup` returns nothing when rendering offline, so offline renders always
generate. Args: ctx, name (Secret), key, length.
*/}}
{{- define "flywheel.secretValue" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .name -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{ index $existing.data .key }}
{{- else -}}
{{ randAlphaNum (.length | default 32) | b64enc }}
{{- end -}}
{{- end }}

{{/*
One decoded value of a datastore Secret, for the identity Secrets: from the Secrets this
render generates (byName), or, for an existingSecret, read with `lookup` (offline: a
placeholder naming it). Args: ctx, byName, existing, default (Secret name), key.
*/}}
{{- define "flywheel.platformSecretValue" -}}
{{- if .existing -}}
{{- $found := lookup "v1" "Secret" .ctx.Release.Namespace .existing -}}
{{- if and $found $found.data (hasKey $found.data .key) -}}
{{ index $found.data .key | b64dec }}
{{- else -}}
{{ printf "unread-existingSecret-%s-%s" .existing .key }}
{{- end -}}
{{- else -}}
{{ index (index .byName .default) .key | b64dec }}
{{- end -}}
{{- end }}

{{/* --- datastore endpoints: bundled (default names) or external (global values) --- */}}
{{- define "flywheel.postgres.host" -}}{{ .Values.global.postgres.host | default "postgres" }}{{- end }}
{{- define "flywheel.postgres.secret" -}}{{ .Values.global.postgres.existingSecret | default "flywheel-postgres" }}{{- end }}
{{- define "flywheel.redis.host" -}}{{ .Values.global.redis.host | default "redis" }}{{- end }}
{{- define "flywheel.redis.secret" -}}{{ .Values.global.redis.existingSecret | default "flywheel-redis" }}{{- end }}
{{- define "flywheel.s3.endpoint" -}}{{ .Values.global.s3.endpoint | default (printf "http://%s.%s.svc.cluster.local:9000" (.Values.global.s3.service | default "seaweedfs") .Release.Namespace) }}{{- end }}
{{- define "flywheel.s3.secret" -}}{{ .Values.global.s3.existingSecret | default "flywheel-s3" }}{{- end }}
{{- define "flywheel.mlflow.url" -}}http://mlflow.{{ .Release.Namespace }}.svc.cluster.local:5000{{- end }}
{{- define "flywheel.labelstudio.url" -}}http://label-studio.{{ .Release.Namespace }}.svc.cluster.local:8080{{- end }}
{{- define "flywheel.feast.url" -}}http://feast.{{ .Release.Namespace }}.svc.cluster.local:6566{{- end }}

{{/*
Env: Postgres connection as the service's own role (the subchart's value postgresRole,
default "feast"; global.postgres.roles), never the superuser.
*/}}
{{- define "flywheel.env.postgres" -}}
{{- $role := .Values.postgresRole | default "feast" -}}
- name: PGHOST
  value: {{ include "flywheel.postgres.host" . | quote }}
- name: PGPORT
  value: {{ .Values.global.postgres.port | quote }}
- name: PGUSER
  value: {{ printf "flywheel_%s" $role | quote }}
- name: PGSSLMODE
  value: {{ .Values.global.postgres.sslmode | quote }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: flywheel-postgres-roles
      key: {{ $role }}
{{- end }}

{{/* Env: the Postgres superuser (db-init and backup Jobs only). */}}
{{- define "flywheel.env.postgresAdmin" -}}
- name: PGHOST
  value: {{ include "flywheel.postgres.host" . | quote }}
- name: PGPORT
  value: {{ .Values.global.postgres.port | quote }}
- name: PGUSER
  value: {{ .Values.global.postgres.user | quote }}
- name: PGSSLMODE
  value: {{ .Values.global.postgres.sslmode | quote }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "flywheel.postgres.secret" . }}
      key: {{ .Values.global.postgres.passwordKey }}
{{- end }}

{{- define "flywheel.env.redis" -}}
- name: REDIS_HOST
  value: {{ include "flywheel.redis.host" . | quote }}
- name: REDIS_PORT
  value: {{ .Values.global.redis.port | quote }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "flywheel.redis.secret" . }}
      key: {{ .Values.global.redis.passwordKey }}
{{- end }}

{{/* Env: S3-compatible storage, in the names boto3 / s3fs / MLflow read. */}}
{{- define "flywheel.env.s3" -}}
- name: AWS_ENDPOINT_URL
  value: {{ include "flywheel.s3.endpoint" . | quote }}
- name: MLFLOW_S3_ENDPOINT_URL
  value: {{ include "flywheel.s3.endpoint" . | quote }}
- name: AWS_DEFAULT_REGION
  value: {{ .Values.global.s3.region | quote }}
- name: FLYWHEEL_S3_BUCKET
  value: {{ .Values.global.s3.bucket | quote }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "flywheel.s3.secret" . }}
      key: {{ .Values.global.s3.accessKeyKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "flywheel.s3.secret" . }}
      key: {{ .Values.global.s3.secretKeyKey }}
{{- end }}


{{/* GPU scheduling: node selector and tolerations from global.gpu. */}}
{{- define "flywheel.gpuScheduling" -}}
{{- with .Values.global.gpu.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.global.gpu.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
NetworkPolicy (ingress): only the listed components (pods labelled app.kubernetes.io/name) of
this release reach `component` on `port`; with pipeline=true also the Kubeflow Pipelines task
pods, selected by namespace AND pod label (global.networkPolicy.pipelinePods), never a whole
namespace. Egress and the default deny are in the umbrella chart (networkpolicy-egress.yaml).
Args: ctx, component, port, from (list of component names), pipeline (bool).
*/}}
{{- define "flywheel.networkPolicy" -}}
{{- if .ctx.Values.global.networkPolicy.enabled }}
{{- $pp := .ctx.Values.global.networkPolicy.pipelinePods | default dict }}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ .component }}
  labels:
    {{- include "flywheel.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "flywheel.selectorLabels" . | nindent 6 }}
  policyTypes: ["Ingress"]
  ingress:
    - ports:
        - port: {{ .port }}
          protocol: TCP
      from:
        - podSelector:
            matchExpressions:
              - key: app.kubernetes.io/name
                operator: In
                values:
                  {{- range (append .from (printf "%s-test" .component)) }}
                  - {{ . }}
                  {{- end }}
        {{- if and .pipeline $pp.namespaces $pp.matchLabels }}
        - namespaceSelector:
            matchExpressions:
              - key: kubernetes.io/metadata.name
                operator: In
                values:
                  {{- toYaml $pp.namespaces | nindent 18 }}
          podSelector:
            matchLabels:
              {{- toYaml $pp.matchLabels | nindent 14 }}
        {{- end }}
{{- end }}
{{- end }}

{{/*
`helm test` hook: a pod in our image that checks `url` answers 2xx (basic auth as the
MLflow identity flywheel-reader when auth is true). Args: ctx, component, url, auth (bool).
*/}}
{{- define "flywheel.testPod" -}}
apiVersion: v1
kind: Pod
metadata:
  name: {{ .component }}-test
  labels:
    {{- include "flywheel.labels" (dict "ctx" .ctx "component" (printf "%s-test" .component)) | nindent 4 }}
  annotations:
    helm.sh/hook: test
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  enableServiceLinks: false
  securityContext:
    {{- include "flywheel.podSecurityContext" (dict "uid" 1000) | nindent 4 }}
  containers:
    - name: check
      image: {{ include "flywheel.image" .ctx }}
      command:
        - python
        - -c
        - |
          import base64, os, sys, urllib.request
          req = urllib.request.Request(sys.argv[1])
          user, password = os.environ.get("CHECK_USER"), os.environ.get("CHECK_PASSWORD")
          if user and password:
              token = base64.b64encode(f"{user}:{password}".encode()).decode()
              req.add_header("Authorization", "Basic " + token)
          with urllib.request.urlopen(req, timeout=20) as resp:
              print(sys.argv[1], resp.status)
              sys.exit(0 if 200 <= resp.status < 300 else 1)
        - {{ .url | quote }}
      {{- if .auth }}
      env:
        - name: CHECK_USER
          value: flywheel-reader
        - name: CHECK_PASSWORD
          valueFrom:
            secretKeyRef:
              name: flywheel-mlflow-users
              key: reader
      {{- end }}
      securityContext:
        {{- include "flywheel.containerSecurityContext" dict | nindent 8 }}
      resources:
        requests: {cpu: 10m, memory: 64Mi}
        limits: {cpu: 200m, memory: 256Mi}
{{- end }}

{{/*
A kept volume that lost its Secret: the data (a database, the object store) holds the old
password and a fresh random one would lock every service out. Fail the install with what
to do, before anything is applied. Args: pvc, secret (lookup results), pvcName,
secretName, what.
*/}}
{{- define "flywheel.keptVolumeCheck" -}}
{{- if and .pvc (not .secret) -}}
{{- fail (printf "PersistentVolumeClaim %s (%s) was kept from an earlier install, but Secret %s is gone: a new random password would not open the data. Restore the Secret (kubectl apply the one you saved, or recreate it with the old password), or delete the claim if the data may go; then install again." .pvcName .what .secretName) -}}
{{- end -}}
{{- end }}
