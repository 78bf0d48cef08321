{{/* Names: the release's prefix, <release>-robin unless the release name holds "robin" already. */}}
{{- define "robin.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "robin.fullname" -}}
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

{{/* A component's name: {{ include "robin.component" (list . "api") }} */}}
{{- define "robin.component" -}}
{{- $top := index . 0 -}}
{{- printf "%s-%s" (include "robin.fullname" $top | trunc (int (sub 62 (len (index . 1))))) (index . 1) | trimSuffix "-" -}}
{{- end -}}

{{- define "robin.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object: (list . "component") */}}
{{- define "robin.labels" -}}
{{- $top := index . 0 -}}
helm.sh/chart: {{ include "robin.chart" $top }}
{{ include "robin.selectorLabels" . }}
app.kubernetes.io/version: {{ $top.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $top.Release.Service }}
app.kubernetes.io/part-of: robin
{{- with $top.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "robin.selectorLabels" -}}
{{- $top := index . 0 -}}
app.kubernetes.io/name: {{ include "robin.name" $top }}
app.kubernetes.io/instance: {{ $top.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* The one image every robin container runs; its tag is robin's version unless set. */}}
{{- define "robin.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* A sidecar's image: (dict "image" .Values.csi.sidecars.provisioner.image) */}}
{{- define "robin.sidecarImage" -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}

{{/* The CSI driver's name: robin's provisioner points the PVs it makes at this name (robin.kube.classes). */}}
{{- define "robin.csiDriverName" -}}
csi.robin.io
{{- end -}}

{{- define "robin.serviceAccountName" -}}
{{- $top := index . 0 -}}
{{- include "robin.component" (list $top (index . 1)) -}}
{{- end -}}

{{/* --- Secrets: an existing one by name, or the one the chart makes from values. --------------------- */}}

{{- define "robin.databaseSecretName" -}}
{{- default (include "robin.component" (list . "database")) .Values.database.existingSecret -}}
{{- end -}}

{{- define "robin.cephSecretName" -}}
{{- default (include "robin.component" (list . "ceph")) .Values.ceph.keyring.existingSecret -}}
{{- end -}}

{{- define "robin.cephConfigMapName" -}}
{{- default (include "robin.component" (list . "ceph")) .Values.ceph.existingConfigMap -}}
{{- end -}}

{{- define "robin.secretKeySecretName" -}}
{{- default (include "robin.component" (list . "secret-key")) .Values.secretKey.existingSecret -}}
{{- end -}}

{{- define "robin.apiTokenSecretName" -}}
{{- default (include "robin.component" (list . "api-token")) .Values.apiToken.existingSecret -}}
{{- end -}}

{{/* robin's API inside the cluster, for the provisioner, the CSI controller and the CSI nodes. */}}
{{- define "robin.apiUrl" -}}
{{- if .Values.apiUrl -}}
{{- .Values.apiUrl -}}
{{- else -}}
{{- printf "http://%s.%s.svc:%d" (include "robin.component" (list . "api")) .Release.Namespace (int .Values.api.service.port) -}}
{{- end -}}
{{- end -}}

{{/* --- What the containers that talk to Ceph and the database share. -------------------------------- */}}

{{/* Where robin's files are inside its containers. */}}
{{- define "robin.paths" -}}
{{- dict "state" "/var/lib/robin" "config" "/etc/robin/robin.toml" "cephConf" "/etc/robin/ceph/ceph.conf" "keyring" "/etc/robin/ceph-keyring/keyring" "secretKeys" "/etc/robin/secret-key/keys" "token" "/etc/robin/api-token/token" "nodeToken" "/etc/robin/node-token/token" | toJson -}}
{{- end -}}

{{/* The environment of a server-side robin process (the API, its migration Job, the gateway). */}}
{{- define "robin.serverEnv" -}}
{{- $paths := include "robin.paths" . | fromJson -}}
- name: ROBIN_CONFIG_FILE
  value: {{ $paths.config }}
- name: ROBIN_STATE_DIR
  value: {{ $paths.state }}
- name: ROBIN_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "robin.databaseSecretName" . }}
      key: {{ .Values.database.secretKey }}
- name: ROBIN_CEPH_CONF
  value: {{ $paths.cephConf }}
- name: ROBIN_CEPH_CLIENT_ID
  value: {{ .Values.ceph.clientId | quote }}
- name: ROBIN_SECRET_KEY_FILE
  value: {{ $paths.secretKeys }}
{{- end -}}

{{- define "robin.serverVolumeMounts" -}}
- name: config
  mountPath: /etc/robin/robin.toml
  subPath: robin.toml
  readOnly: true
- name: ceph-conf
  mountPath: /etc/robin/ceph
  readOnly: true
- name: ceph-keyring
  mountPath: /etc/robin/ceph-keyring
  readOnly: true
- name: secret-key
  mountPath: /etc/robin/secret-key
  readOnly: true
{{- end -}}

{{/* Secrets are mounted 0440: readable by the pod's fsGroup, i.e. robin's non-root user, and nobody else. */}}
{{- define "robin.serverVolumes" -}}
- name: config
  configMap:
    name: {{ include "robin.component" (list . "config") }}
- name: ceph-conf
  configMap:
    name: {{ include "robin.cephConfigMapName" . }}
    items:
      - key: ceph.conf
        path: ceph.conf
- name: ceph-keyring
  secret:
    secretName: {{ include "robin.cephSecretName" . }}
    defaultMode: 0440
    items:
      - key: keyring
        path: keyring
- name: secret-key
  secret:
    secretName: {{ include "robin.secretKeySecretName" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.secretKey.secretKey }}
        path: keys
{{- end -}}

{{/* For robin's API clients (the provisioner, the CSI controller): where the API is and its token. */}}
{{- define "robin.clientEnv" -}}
{{- $paths := include "robin.paths" . | fromJson -}}
- name: ROBIN_CONFIG_FILE
  value: {{ $paths.config }}
- name: ROBIN_URL
  value: {{ include "robin.apiUrl" . | quote }}
- name: ROBIN_TOKEN_FILE
  value: {{ $paths.token }}
{{- end -}}

{{- define "robin.clientVolumeMounts" -}}
- name: config
  mountPath: /etc/robin/robin.toml
  subPath: robin.toml
  readOnly: true
- name: api-token
  mountPath: /etc/robin/api-token
  readOnly: true
{{- end -}}

{{- define "robin.clientVolumes" -}}
- name: config
  configMap:
    name: {{ include "robin.component" (list . "config") }}
- name: api-token
  secret:
    secretName: {{ include "robin.apiTokenSecretName" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.apiToken.secretKey }}
        path: token
{{- end -}}

{{/* The unprivileged containers: robin's API, provisioner, CSI controller and the sidecars. */}}
{{- define "robin.restrictedSecurityContext" -}}
runAsNonRoot: true
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "robin.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end -}}

{{/* What every pod spec may add: pull secrets, and scheduling from the component's values (list . $values) */}}
{{- define "robin.scheduling" -}}
{{- $top := index . 0 -}}
{{- $values := index . 1 -}}
{{- with $top.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
