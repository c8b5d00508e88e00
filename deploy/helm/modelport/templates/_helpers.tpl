{{/*
Shared definitions. Every define is prefixed `modelport.` so they cannot clash with a
parent chart's.
*/}}

{{- define "modelport.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-<chart>, or <release> alone when it already contains the chart name. */}}
{{- define "modelport.fullname" -}}
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

{{- define "modelport.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of a component's objects. Call with (dict "root" $ "component" "router"). */}}
{{- define "modelport.componentName" -}}
{{- printf "%s-%s" (include "modelport.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of one model's objects: <fullname>-model-<name>. */}}
{{- define "modelport.modelFullname" -}}
{{- printf "%s-model-%s" (include "modelport.fullname" .root) .model.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels. Call with (dict "root" $ "component" "router" ["model" $model]). */}}
{{- define "modelport.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelport.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- with .model }}
{{- if .pool }}
{{- /* Routers find every pool replica under this reserved model name. */}}
modelport.io/model: modelport-pool
modelport.io/pool: {{ .name }}
{{- else }}
modelport.io/model: {{ .name }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "modelport.labels" -}}
helm.sh/chart: {{ include "modelport.chart" .root }}
{{ include "modelport.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: modelport
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Deep merge: maps merge key by key, anything else in `override` replaces `base`, even
false/0/"" (sprig's merge helpers treat those as unset, so per-model `pdb.enabled: false`
would be lost). Returns YAML; call with (dict "base" $a "override" $b).
*/}}
{{- define "modelport.deepMerge" -}}
{{- $out := deepCopy .base -}}
{{- range $key, $value := .override -}}
{{- $current := get $out $key -}}
{{- if and (kindIs "map" $value) (kindIs "map" $current) -}}
{{- $_ := set $out $key (include "modelport.deepMerge" (dict "base" $current "override" $value) | fromYaml) -}}
{{- else -}}
{{- $_ := set $out $key $value -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* All models, each merged over modelDefaults, as YAML {models: [...]}. */}}
{{- define "modelport.models" -}}
{{- $models := list -}}
{{- $seen := dict -}}
{{- range .Values.models -}}
{{- if hasKey $seen .name -}}
{{- fail (printf "models: %q is listed twice; model names must be unique" .name) -}}
{{- end -}}
{{- $_ := set $seen .name true -}}
{{- $models = append $models (include "modelport.deepMerge" (dict "base" $.Values.modelDefaults "override" .) | fromYaml) -}}
{{- end -}}
{{- toYaml (dict "models" $models) -}}
{{- end -}}

{{/* Image reference; call with (dict "root" $ "model" $model) or (dict "root" $). */}}
{{- define "modelport.image" -}}
{{- $image := .root.Values.image -}}
{{- $repository := $image.repository -}}
{{- $tag := default .root.Chart.AppVersion $image.tag -}}
{{- if .model -}}
{{- if include "modelport.usesVllm" .model -}}
{{- $repository = default $repository $image.vllm.repository -}}
{{- $tag = default (printf "%s%s" $tag $image.vllm.suffix) $image.vllm.tag -}}
{{- end -}}
{{- if gt (int .model.gpu) 0 -}}
{{- $tag = printf "%s%s" $tag $image.cudaSuffix -}}
{{- end -}}
{{- with .model.image -}}
{{- $repository = default $repository .repository -}}
{{- $tag = default $tag .tag -}}
{{- end -}}
{{- end -}}
{{- if hasPrefix "sha256:" $tag -}}
{{- printf "%s@%s" $repository $tag -}}
{{- else -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}
{{- end -}}

{{/* "true" when a model's Deployment runs vLLM (its generative engine is vllm), else "". */}}
{{- define "modelport.usesVllm" -}}
{{- $g := default dict .generative -}}
{{- if and $g.enabled (eq (toString $g.engine) "vllm") -}}true{{- end -}}
{{- end -}}

{{- define "modelport.registryAddress" -}}
{{- if .Values.registry.enabled -}}
{{- printf "%s:8003" (include "modelport.componentName" (dict "root" . "component" "registry")) -}}
{{- else -}}
{{- required "registry.externalAddress is required when registry.enabled is false" .Values.registry.externalAddress -}}
{{- end -}}
{{- end -}}

{{- define "modelport.routerAddress" -}}
{{- printf "%s:%v" (include "modelport.componentName" (dict "root" . "component" "router")) .Values.router.service.port -}}
{{- end -}}

{{- define "modelport.routerServiceAccount" -}}
{{- if .Values.router.serviceAccount.create -}}
{{- default (include "modelport.componentName" (dict "root" . "component" "router")) .Values.router.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.router.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Environment every modelport container gets (each flag reads MODELPORT_<FLAG>, and
tests/helm/test_chart_cli_contract.py checks that an option reads every one).
clientEnv: what the load test also reads; commonEnv (the servers) adds tracing.
*/}}
{{- define "modelport.commonEnv" -}}
{{ include "modelport.clientEnv" . }}
{{- with .Values.observability.otlpEndpoint }}
- name: MODELPORT_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{- define "modelport.clientEnv" -}}
# Read-only root filesystem: whatever is written under $HOME lands in the /tmp volume.
- name: HOME
  value: /tmp
- name: MODELPORT_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: MODELPORT_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- if .Values.tls.enabled }}
- name: MODELPORT_TLS_CERT_FILE
  value: /etc/modelport/tls/tls.crt
- name: MODELPORT_TLS_KEY_FILE
  value: /etc/modelport/tls/tls.key
- name: MODELPORT_TLS_CA_FILE
  value: /etc/modelport/tls/ca.crt
{{- end }}
{{- if .Values.devSync.enabled }}
- name: PYTHONPATH
  value: /opt/modelport-dev
{{- end }}
{{- end -}}

{{/*
A probe handler. Native gRPC probes use plaintext, so with TLS the check runs inside the
container through grpc's health stub with the mounted certificates.
Call with (dict "root" $ "port" 8001 "service" "").
*/}}
{{- define "modelport.probeHandler" -}}
{{- if .root.Values.tls.enabled -}}
exec:
  command:
    - python
    - -c
    - |
      import sys, grpc
      from grpc_health.v1 import health_pb2, health_pb2_grpc
      port, service, name = sys.argv[1:]
      read = lambda p: open("/etc/modelport/tls/" + p, "rb").read()
      creds = grpc.ssl_channel_credentials(read("ca.crt"), read("tls.key"), read("tls.crt"))
      options = [("grpc.ssl_target_name_override", name)]
      with grpc.secure_channel("127.0.0.1:" + port, creds, options) as channel:
          reply = health_pb2_grpc.HealthStub(channel).Check(
              health_pb2.HealthCheckRequest(service=service), timeout=3)
      sys.exit(0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1)
    - {{ .port | quote }}
    - {{ .service | quote }}
    - {{ .root.Values.tls.serverName | quote }}
{{- else -}}
grpc:
  port: {{ .port }}
  service: {{ .service | quote }}
{{- end -}}
{{- end -}}

{{/* Pod annotations for Prometheus' kubernetes_sd (when chosen) plus extra ones. */}}
{{- define "modelport.podAnnotations" -}}
{{- if .root.Values.observability.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: "8002"
prometheus.io/path: /metrics
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Pod-level settings shared by every Deployment. */}}
{{- define "modelport.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- if .Values.devSync.enabled }}
initContainers:
  - name: dev-sync-seed
    image: {{ include "modelport.image" (dict "root" .) }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    command:
      - python
      - -c
      - |
        import os, shutil, modelport
        shutil.copytree(os.path.dirname(modelport.__file__), "/opt/modelport-dev/modelport",
                        dirs_exist_ok=True)
    securityContext:
      {{- toYaml .Values.containerSecurityContext | nindent 6 }}
    volumeMounts:
      - name: dev-src
        mountPath: /opt/modelport-dev
{{- end }}
{{- end -}}

{{/* Volumes every modelport pod has: /tmp, TLS and the dev sources when enabled. */}}
{{- define "modelport.commonVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- if .Values.devSync.enabled }}
- name: dev-src
  emptyDir: {}
{{- end }}
{{- end -}}

{{- define "modelport.commonVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.devSync.enabled }}
- name: dev-src
  mountPath: /opt/modelport-dev
{{- end }}
{{- end -}}

{{/* preStop: keep serving while endpoints are removed, then SIGTERM starts the drain. */}}
{{- define "modelport.preStop" -}}
{{- if gt (int .) 0 }}
lifecycle:
  preStop:
    sleep:
      seconds: {{ int . }}
{{- end }}
{{- end -}}

{{/* terminationGracePeriodSeconds: preStop + drain grace + 5 s of headroom. */}}
{{- define "modelport.terminationGrace" -}}
{{- add (int .preStop) (int (ceil .grace)) 5 -}}
{{- end -}}

{{/* NetworkPolicy ingress rule for /metrics; call with .Values.networkPolicy. */}}
{{- define "modelport.metricsIngress" -}}
- ports:
    - port: 8002
      protocol: TCP
  {{- with .metricsFrom }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* The KEDA trigger of a model in mode keda: "router" (the router's external scaler,
     needed to scale from zero: it holds the requests) or "prometheus". */}}
{{- define "modelport.kedaTrigger" -}}
{{- $a := .autoscaling -}}
{{- $trigger := $a.keda.trigger | default (ternary "router" "prometheus" (eq (int $a.minReplicas) 0)) -}}
{{- if and (eq (int $a.minReplicas) 0) (ne $trigger "router") -}}
{{- fail (printf "models %q: minReplicas 0 needs autoscaling.keda.trigger router (at zero no pod exports metrics; the router holds requests and activates the model)" .name) -}}
{{- end -}}
{{- $trigger -}}
{{- end -}}

{{/* Names of the models the router holds at zero replicas, one per line. */}}
{{- define "modelport.heldModels" -}}
{{- range (include "modelport.models" . | fromYaml).models -}}
{{- if and (eq .autoscaling.mode "keda") (eq (include "modelport.kedaTrigger" .) "router") }}
{{ .name }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The `serve inference` flags of a generative entry, one "- --flag=value" line each
     (none unless generative.enabled). Tensor parallelism defaults to the pod's GPUs. */}}
{{- define "modelport.generativeArgs" -}}
{{- $g := .generative -}}
{{- if $g.enabled -}}
{{- $gpu := int .gpu -}}
{{- $tp := int $g.tensorParallelSize -}}
{{- if and (eq $tp 0) (gt $gpu 1) -}}
{{- $tp = $gpu -}}
{{- end -}}
{{- if and (gt $tp 1) (gt $tp $gpu) -}}
{{- fail (printf "models %q: generative.tensorParallelSize %d needs that many GPUs in the pod (gpu: %d)" .name $tp $gpu) -}}
{{- end -}}
{{- if and (gt $tp 1) (eq $g.engine "continuous") -}}
{{- fail (printf "models %q: the continuous engine runs a model on one device; tensor parallelism needs engine vllm" .name) -}}
{{- end -}}
{{- with $g.engine }}
- --generative-engine={{ . }}
{{- end }}
{{- if $g.kvMemoryFraction }}
- --kv-memory-fraction={{ $g.kvMemoryFraction }}
{{- end }}
{{- if $g.kvCacheMb }}
- --kv-cache-mb={{ int $g.kvCacheMb }}
{{- end }}
{{- if $g.maxNumSeqs }}
- --max-num-seqs={{ int $g.maxNumSeqs }}
{{- end }}
{{- if $tp }}
- --tensor-parallel-size={{ $tp }}
{{- end }}
{{- end -}}
{{- end -}}
