{{/* Names, labels and the pieces every template shares. */}}

{{- define "lepton.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lepton.fullname" -}}
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

{{/* The name of one component's objects: <fullname>-<component>. */}}
{{- define "lepton.componentName" -}}
{{- printf "%s-%s" (include "lepton.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lepton.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lepton.labels" -}}
helm.sh/chart: {{ include "lepton.chart" . }}
app.kubernetes.io/name: {{ include "lepton.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lepton
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of one component: call with (dict "root" $ "component" "operator"). */}}
{{- define "lepton.componentLabels" -}}
{{ include "lepton.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "lepton.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lepton.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "lepton.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* kube-scheduler's image: the cluster's own version unless a tag is given. */}}
{{- define "lepton.kubeSchedulerImage" -}}
{{- $ks := .Values.scheduler.kubeScheduler.image -}}
{{- $tag := $ks.tag -}}
{{- if not $tag -}}
{{- $tag = regexFind "^v[0-9]+\\.[0-9]+\\.[0-9]+" .Capabilities.KubeVersion.Version -}}
{{- end -}}
{{- printf "%s:%s" $ks.repository $tag -}}
{{- end -}}

{{/* The Lepton scheduler's in-cluster URL, as kube-scheduler calls it. */}}
{{- define "lepton.schedulerServerUrl" -}}
{{- printf "http://%s.%s.svc:%d" (include "lepton.componentName" (dict "root" . "component" "scheduler-server")) .Release.Namespace (int .Values.scheduler.server.port) -}}
{{- end -}}

{{/* A container that may not escalate, write its root filesystem or keep any capability. */}}
{{- define "lepton.restrictedContainer" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "lepton.restrictedPod" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "lepton.serviceAccountName" -}}
{{- if .root.Values.serviceAccount.create -}}
{{- include "lepton.componentName" . -}}
{{- else -}}
default
{{- end -}}
{{- end -}}

{{/* Prometheus Operator's CRDs are served (ServiceMonitor / PodMonitor can be made). */}}
{{- define "lepton.monitoringAvailable" -}}
{{- if and .Values.monitoring.enabled (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor") -}}
true
{{- end -}}
{{- end -}}
