{{/*
Security wiring shared by every component: which TLS Secret a pod mounts, the
certificate identity it presents, and the environment and volumes for auth, mutual
TLS to upstream services and encryption at rest. Components: router, registry,
inference, loadtest. Call each with (dict "root" $ "component" "router").
*/}}

{{/* The TLS Secret of a component: its own cert-manager Certificate, or the shared one. */}}
{{- define "modelport.tlsSecretName" -}}
{{- if .root.Values.tls.certManager.enabled -}}
{{- printf "%s-tls" (include "modelport.componentName" (dict "root" .root "component" .component)) -}}
{{- else -}}
{{- required "tls.secretName is required when tls.enabled (or turn on tls.certManager)" .root.Values.tls.secretName -}}
{{- end -}}
{{- end -}}

{{/* The SAN a component's certificate proves: a SPIFFE-style URI of its own with
cert-manager, else the shared certificate's server name (one identity for all). */}}
{{- define "modelport.peerIdentity" -}}
{{- if .root.Values.tls.certManager.enabled -}}
{{- printf "spiffe://%s/ns/%s/%s" .root.Values.tls.certManager.trustDomain .root.Release.Namespace (include "modelport.componentName" (dict "root" .root "component" .component)) -}}
{{- else -}}
{{- .root.Values.tls.serverName -}}
{{- end -}}
{{- end -}}

{{- define "modelport.policyConfigMap" -}}
{{- default (include "modelport.componentName" (dict "root" . "component" "auth")) .Values.auth.existingPolicyConfigMap -}}
{{- end -}}

{{/* Environment for auth, upstream mutual TLS, encryption and reflection. */}}
{{- define "modelport.securityEnv" -}}
{{- $v := .root.Values -}}
{{- $c := .component -}}
{{- if ne $c "loadtest" }}
- name: MODELPORT_REFLECTION
  value: {{ $v.server.reflection | quote }}
{{- end }}
{{- if and $v.tls.enabled (has $c (list "router" "inference")) }}
# Internal channels (to replicas and the registry) use mutual TLS with this pod's certificate.
- name: MODELPORT_UPSTREAM_TLS_CA_FILE
  value: /etc/modelport/tls/ca.crt
- name: MODELPORT_UPSTREAM_TLS_CERT_FILE
  value: /etc/modelport/tls/tls.crt
- name: MODELPORT_UPSTREAM_TLS_KEY_FILE
  value: /etc/modelport/tls/tls.key
- name: MODELPORT_UPSTREAM_TLS_SERVER_NAME
  value: {{ $v.tls.serverName | quote }}
{{- end }}
{{- if and $v.tls.enabled $v.tls.metrics (ne $c "loadtest") }}
- name: MODELPORT_METRICS_TLS
  value: "true"
{{- end }}
{{- if and $v.tls.enabled (eq $c "loadtest") }}
- name: MODELPORT_TLS_SERVER_NAME
  value: {{ $v.tls.serverName | quote }}
{{- end }}
{{- if and $v.auth.enabled (has $c (list "router" "registry")) }}
- name: MODELPORT_AUTH_POLICY_FILE
  value: /etc/modelport/policy/policy.yaml
{{- with $v.auth.apiKeysSecret }}
- name: MODELPORT_API_KEYS_FILE
  value: /etc/modelport/api-keys/keys.yaml
{{- end }}
{{- with $v.auth.jwt }}
{{- if .jwksUrl }}
- name: MODELPORT_JWKS_URL
  value: {{ .jwksUrl | quote }}
- name: MODELPORT_JWT_ISSUER
  value: {{ required "auth.jwt.issuer is required with auth.jwt.jwksUrl" .issuer | quote }}
- name: MODELPORT_JWT_AUDIENCE
  value: {{ required "auth.jwt.audience is required with auth.jwt.jwksUrl" .audience | quote }}
- name: MODELPORT_JWT_LEEWAY_SECONDS
  value: {{ .leewaySeconds | quote }}
- name: MODELPORT_JWT_TENANT_CLAIM
  value: {{ .tenantClaim | quote }}
- name: MODELPORT_JWT_ROLES_CLAIM
  value: {{ .rolesClaim | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $v.auth.enabled $v.auth.inferenceOnlyFromRouter $v.tls.enabled (eq $c "inference") }}
# Only the router's certificate identity may call the inference service.
- name: MODELPORT_ALLOWED_PEER
  value: {{ include "modelport.peerIdentity" (dict "root" .root "component" "router") | quote }}
{{- end }}
{{- if and $v.encryption.enabled (has $c (list "registry" "inference")) }}
- name: MODELPORT_KEK_FILE
  value: /etc/modelport/kek/kek.yaml
{{- end }}
{{- if and $v.encryption.enabled (eq $c "registry") }}
- name: MODELPORT_SCRATCH_DIR
  value: /scratch
{{- end }}
{{- if and (eq $c "loadtest") $v.tests.apiKeySecret }}
- name: MODELPORT_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $v.tests.apiKeySecret }}
      key: api-key
{{- end }}
{{- end -}}

{{- define "modelport.securityVolumes" -}}
{{- $v := .root.Values -}}
{{- $c := .component -}}
{{- if $v.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "modelport.tlsSecretName" . }}
    defaultMode: 0440
{{- end }}
{{- if and $v.auth.enabled (has $c (list "router" "registry")) }}
- name: policy
  configMap:
    name: {{ include "modelport.policyConfigMap" .root }}
{{- with $v.auth.apiKeysSecret }}
- name: api-keys
  secret:
    secretName: {{ . }}
    defaultMode: 0440
{{- end }}
{{- end }}
{{- if and $v.encryption.enabled (has $c (list "registry" "inference")) }}
- name: kek
  secret:
    secretName: {{ required "encryption.kekSecret is required when encryption.enabled" $v.encryption.kekSecret }}
    defaultMode: 0440
{{- end }}
{{- if and $v.encryption.enabled (eq $c "registry") }}
# An upload's plaintext while it is checked: memory, never the disk.
- name: scratch
  emptyDir:
    medium: Memory
    sizeLimit: {{ $v.encryption.scratchSizeLimit }}
{{- end }}
{{- end -}}

{{- define "modelport.securityVolumeMounts" -}}
{{- $v := .root.Values -}}
{{- $c := .component -}}
{{- if $v.tls.enabled }}
- name: tls
  mountPath: /etc/modelport/tls
  readOnly: true
{{- end }}
{{- if and $v.auth.enabled (has $c (list "router" "registry")) }}
- name: policy
  mountPath: /etc/modelport/policy
  readOnly: true
{{- if $v.auth.apiKeysSecret }}
- name: api-keys
  mountPath: /etc/modelport/api-keys
  readOnly: true
{{- end }}
{{- end }}
{{- if and $v.encryption.enabled (has $c (list "registry" "inference")) }}
- name: kek
  mountPath: /etc/modelport/kek
  readOnly: true
{{- end }}
{{- if and $v.encryption.enabled (eq $c "registry") }}
- name: scratch
  mountPath: /scratch
{{- end }}
{{- end -}}
