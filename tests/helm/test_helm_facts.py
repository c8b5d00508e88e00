"""The facts users of the chart rely on, asserted on the rendered objects."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.helm.helmchart import (
    CHART,
    RELEASE,
    SCENARIOS,
    Manifest,
    Render,
    by_kind,
    named,
    run_helm,
    scenario,
)

PREFIX = f"{RELEASE}-modelport"


def pod_spec(deployment: Manifest) -> Manifest:
    return deployment["spec"]["template"]["spec"]


def container(deployment: Manifest) -> Manifest:
    containers = pod_spec(deployment)["containers"]
    assert len(containers) == 1
    return containers[0]


def arg_value(args: list[str], flag: str) -> str:
    values = [arg.split("=", 1)[1] for arg in args if arg.startswith(flag + "=")]
    assert len(values) == 1, f"{flag} in {args}"
    return values[0]


def env_of(cont: Manifest) -> dict[str, Manifest]:
    return {item["name"]: item for item in cont.get("env", [])}


# --- GPU ----------------------------------------------------------------------------


def test_gpu_model_gets_gpu_limit_node_selector_and_toleration(render: Render) -> None:
    objects = render(scenario("two-models-gpu-keda"))
    gpu = named(objects, "Deployment", f"{PREFIX}-model-resnet50")
    spec = pod_spec(gpu)
    assert container(gpu)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    assert spec["runtimeClassName"] == "nvidia"
    assert spec["priorityClassName"] == "inference-high"
    assert container(gpu)["image"].endswith(":0.1.0-cuda")

    cpu = named(objects, "Deployment", f"{PREFIX}-model-simple")
    assert "nvidia.com/gpu" not in container(cpu)["resources"].get("limits", {})
    assert "tolerations" not in pod_spec(cpu)
    assert "nodeSelector" not in pod_spec(cpu)
    assert container(cpu)["image"].endswith(":0.1.0")


def test_gpu_model_without_node_selector_gets_the_gpu_default(render: Render) -> None:
    objects = render(sets=("models[0].name=big", "models[0].gpu=2"))
    spec = pod_spec(named(objects, "Deployment", f"{PREFIX}-model-big"))
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2


# --- every Deployment: probes, security, grace ---------------------------------------


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.name)
def test_every_deployment_has_probes_and_a_locked_down_security_context(
    render: Render, values: object
) -> None:
    for deployment in by_kind(render(values), "Deployment"):
        spec = pod_spec(deployment)
        name = deployment["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for cont in spec["containers"] + spec.get("initContainers", []):
            security = cont["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
        main = spec["containers"][0]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert probe in main, f"{name}: no {probe}"
        mounts = {mount["mountPath"] for mount in main["volumeMounts"]}
        assert "/tmp" in mounts, f"{name}: read-only root needs a writable /tmp"


def test_inference_probes_use_grpc_health_with_model_service(render: Render) -> None:
    objects = render(scenario("two-models-gpu-keda"))
    main = container(named(objects, "Deployment", f"{PREFIX}-model-resnet50"))
    assert main["startupProbe"]["grpc"] == {"port": 8001, "service": "resnet50"}
    assert main["readinessProbe"]["grpc"] == {"port": 8001, "service": "resnet50"}
    assert main["livenessProbe"]["grpc"] == {"port": 8001, "service": ""}
    startup = main["startupProbe"]
    # The scenario allows 15 minutes for a big model to load.
    assert startup["periodSeconds"] * startup["failureThreshold"] == 900


def test_termination_grace_covers_pre_stop_and_drain(render: Render) -> None:
    objects = render(scenario("two-models-gpu-keda"))
    for deployment in by_kind(objects, "Deployment"):
        spec = pod_spec(deployment)
        main = spec["containers"][0]
        grace = float(arg_value(main["args"], "--grace-seconds"))
        pre_stop = main.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        assert spec["terminationGracePeriodSeconds"] > grace + pre_stop
    inference = container(named(objects, "Deployment", f"{PREFIX}-model-simple"))
    assert inference["lifecycle"]["preStop"]["sleep"]["seconds"] >= 5


def test_inference_args_follow_the_cli_contract(render: Render) -> None:
    objects = render(scenario("two-models-gpu-keda"))
    args = container(named(objects, "Deployment", f"{PREFIX}-model-resnet50"))["args"]
    assert args[:2] == ["serve", "inference"]
    assert arg_value(args, "--model") == "resnet50@canary"
    assert arg_value(args, "--registry") == f"{PREFIX}-registry:8003"
    assert arg_value(args, "--cache-dir") == "/cache"
    assert arg_value(args, "--grpc-port") == "8001"
    service = named(objects, "Service", f"{PREFIX}-model-resnet50")
    assert service["spec"]["clusterIP"] == "None"
    assert service["metadata"]["labels"]["modelport.io/model"] == "resnet50"


# --- router RBAC ---------------------------------------------------------------------


def test_router_role_allows_exactly_list_and_watch_on_endpointslices(render: Render) -> None:
    objects = render(scenario("defaults"))
    role = named(objects, "Role", f"{PREFIX}-router")
    assert role["rules"] == [
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["list", "watch"],
        }
    ]
    binding = named(objects, "RoleBinding", f"{PREFIX}-router")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    router = named(objects, "Deployment", f"{PREFIX}-router")
    account = pod_spec(router)["serviceAccountName"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": "serving"}
    ]
    args = container(router)["args"]
    assert arg_value(args, "--discovery") == "kubernetes"
    assert arg_value(args, "--namespace") == "serving"


def test_only_the_router_mounts_an_api_token(render: Render) -> None:
    for deployment in by_kind(render(scenario("two-models-gpu-keda")), "Deployment"):
        is_router = deployment["metadata"]["labels"]["app.kubernetes.io/component"] == "router"
        assert pod_spec(deployment).get("automountServiceAccountToken", True) is is_router


# --- autoscaling ---------------------------------------------------------------------


def test_hpas_target_their_own_deployments(render: Render) -> None:
    for values in SCENARIOS:
        objects = render(values)
        deployments = {d["metadata"]["name"] for d in by_kind(objects, "Deployment")}
        for hpa in by_kind(objects, "HorizontalPodAutoscaler"):
            target = hpa["spec"]["scaleTargetRef"]
            assert target["kind"] == "Deployment" and target["apiVersion"] == "apps/v1"
            assert target["name"] == hpa["metadata"]["name"] in deployments


def test_each_autoscaling_mode_renders_its_own_scaler(render: Render) -> None:
    objects = render(scenario("two-models-gpu-keda"))
    cpu_hpa = named(objects, "HorizontalPodAutoscaler", f"{PREFIX}-model-simple")
    assert cpu_hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert (cpu_hpa["spec"]["minReplicas"], cpu_hpa["spec"]["maxReplicas"]) == (2, 6)
    # KEDA owns the GPU model's HPA: the chart must not render a second one.
    hpa_names = {h["metadata"]["name"] for h in by_kind(objects, "HorizontalPodAutoscaler")}
    assert f"{PREFIX}-model-resnet50" not in hpa_names
    scaled = named(objects, "ScaledObject", f"{PREFIX}-model-resnet50")
    assert scaled["spec"]["scaleTargetRef"]["name"] == f"{PREFIX}-model-resnet50"
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (1, 8)
    trigger = scaled["spec"]["triggers"][0]["metadata"]
    assert trigger["query"] == (
        'sum(modelport_inference_in_flight{namespace="serving",model="resnet50"})'
    )
    assert trigger["threshold"] == "8"
    behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 600

    metric = render(scenario("postgresql-tls"))
    pods_hpa = named(metric, "HorizontalPodAutoscaler", f"{PREFIX}-model-mlp")
    pods_metric = pods_hpa["spec"]["metrics"][0]
    assert pods_metric["type"] == "Pods"
    assert pods_metric["pods"]["metric"]["name"] == "modelport_inference_in_flight"
    assert pods_metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "4"}
    assert not by_kind(metric, "ScaledObject")


def test_autoscaled_deployments_leave_replicas_to_the_scaler(render: Render) -> None:
    objects = render(scenario("two-models-gpu-keda"))
    for name in ("router", "model-simple", "model-resnet50"):
        assert "replicas" not in named(objects, "Deployment", f"{PREFIX}-{name}")["spec"]
    fixed = render(scenario("disabled"))
    assert named(fixed, "Deployment", f"{PREFIX}-model-simple")["spec"]["replicas"] == 1


def test_false_in_a_model_entry_overrides_a_true_default(render: Render) -> None:
    objects = render(scenario("two-models-gpu-keda"))
    pdbs = {p["metadata"]["name"] for p in by_kind(objects, "PodDisruptionBudget")}
    assert f"{PREFIX}-model-simple" in pdbs
    assert f"{PREFIX}-model-resnet50" not in pdbs  # pdb.enabled: false in the entry


# --- registry ------------------------------------------------------------------------


def test_sqlite_registry_is_one_replica_on_a_pvc(render: Render) -> None:
    objects = render(scenario("defaults"))
    registry = named(objects, "Deployment", f"{PREFIX}-registry")
    assert registry["spec"]["replicas"] == 1
    assert registry["spec"]["strategy"]["type"] == "Recreate"
    args = container(registry)["args"]
    assert arg_value(args, "--database") == "sqlite:////data/registry.db"
    assert arg_value(args, "--blob-dir") == "/data/blobs"
    claim = named(objects, "PersistentVolumeClaim", f"{PREFIX}-registry")
    volumes = {v["name"]: v for v in pod_spec(registry)["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]


def test_postgresql_registry_reads_its_url_from_a_secret(render: Render) -> None:
    objects = render(scenario("postgresql-tls"))
    registry = named(objects, "Deployment", f"{PREFIX}-registry")
    assert registry["spec"]["replicas"] == 3
    main = container(registry)
    assert not any(arg.startswith("--database") for arg in main["args"])
    source = env_of(main)["MODELPORT_DATABASE"]["valueFrom"]["secretKeyRef"]
    assert source == {"name": "modelport-registry-db", "key": "url"}
    claim = named(objects, "PersistentVolumeClaim", f"{PREFIX}-registry")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("registry.replicas=2",), "needs registry.database.type=postgresql"),
        (
            (
                "registry.replicas=2",
                "registry.database.type=postgresql",
                "registry.database.postgresql.secretName=db",
            ),
            "ReadWriteMany",
        ),
        (("tls.enabled=true",), "tls.secretName is required"),
        (("models[0].name=a", "models[1].name=a"), "listed twice"),
        (
            ("registry.enabled=false", "models[0].name=a"),
            "registry.externalAddress is required",
        ),
    ],
)
def test_inconsistent_values_fail_with_a_clear_message(
    render_error: Callable[..., str], sets: tuple[str, ...], message: str
) -> None:
    assert message in render_error(sets=sets)


# --- TLS -----------------------------------------------------------------------------


def test_tls_secret_is_mounted_and_probes_speak_tls(render: Render) -> None:
    objects = render(scenario("postgresql-tls"))
    workloads = by_kind(objects, "Deployment") + by_kind(objects, "Job")
    assert len(workloads) == 4
    for workload in workloads:
        spec = pod_spec(workload)
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["tls"]["secret"]["secretName"] == "modelport-grpc-tls"
        main = spec["containers"][0]
        assert {"name": "tls", "mountPath": "/etc/modelport/tls", "readOnly": True} in main[
            "volumeMounts"
        ]
        env = env_of(main)
        assert env["MODELPORT_TLS_CERT_FILE"]["value"] == "/etc/modelport/tls/tls.crt"
        assert env["MODELPORT_TLS_KEY_FILE"]["value"] == "/etc/modelport/tls/tls.key"
        assert env["MODELPORT_TLS_CA_FILE"]["value"] == "/etc/modelport/tls/ca.crt"
        if workload["kind"] == "Deployment":
            # kubelet's gRPC probes are plaintext: with TLS they must be exec probes.
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert "grpc" not in main[probe]
                assert main[probe]["exec"]["command"][-1] == "modelport.internal"


def test_tls_probe_script_compiles(render: Render) -> None:
    objects = render(scenario("postgresql-tls"))
    main = container(named(objects, "Deployment", f"{PREFIX}-model-mlp"))
    command = main["readinessProbe"]["exec"]["command"]
    assert command[:2] == ["python", "-c"]
    compile(command[2], "probe", "exec")
    assert command[3:5] == ["8001", "mlp"]


# --- network policies ----------------------------------------------------------------


def test_network_policies_let_only_the_router_reach_inference(render: Render) -> None:
    objects = render(scenario("two-models-gpu-keda"))
    policy = named(objects, "NetworkPolicy", f"{PREFIX}-inference")
    grpc_rule = next(r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == 8001)
    assert grpc_rule["from"] == [
        {
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "modelport",
                    "app.kubernetes.io/instance": RELEASE,
                    "app.kubernetes.io/component": "router",
                }
            }
        }
    ]
    router_pods = pod_spec(named(objects, "Deployment", f"{PREFIX}-router"))
    router_labels = named(objects, "Deployment", f"{PREFIX}-router")["spec"]["template"]
    assert router_pods  # the selector above must match the router pods' labels
    selector = grpc_rule["from"][0]["podSelector"]["matchLabels"]
    assert selector.items() <= router_labels["metadata"]["labels"].items()


def test_network_policy_lets_inference_router_and_admins_reach_registry(render: Render) -> None:
    objects = render(scenario("two-models-gpu-keda"))
    policy = named(objects, "NetworkPolicy", f"{PREFIX}-registry")
    rule = next(r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == 8003)
    components = [
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for peer in rule["from"]
        if "podSelector" in peer
    ]
    assert components == ["inference", "router"]
    admin = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ml-platform"}}}
    assert admin in rule["from"]
    # Clients restricted by routerFrom; the helm test pod is let in beside them.
    router_policy = named(objects, "NetworkPolicy", f"{PREFIX}-router")
    router_rule = router_policy["spec"]["ingress"][0]
    loadtest = [p for p in router_rule["from"] if "podSelector" in p]
    assert loadtest[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "loadtest"


# --- observability and helm test -----------------------------------------------------


def test_otlp_endpoint_and_service_monitor(render: Render) -> None:
    objects = render(scenario("two-models-gpu-keda"))
    for deployment in by_kind(objects, "Deployment"):
        env = env_of(container(deployment))
        assert env["MODELPORT_OTLP_ENDPOINT"]["value"].endswith(":4317")
        assert env["MODELPORT_LOG_FORMAT"]["value"] == "json"
    monitor = by_kind(objects, "ServiceMonitor")[0]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    for service in by_kind(objects, "Service"):
        assert "metrics" in {port["name"] for port in service["spec"]["ports"]}
        assert monitor["spec"]["selector"]["matchLabels"].items() <= (
            service["metadata"]["labels"].items()
        )
    assert not by_kind(render(scenario("defaults")), "ServiceMonitor")


def test_helm_test_job_load_tests_the_first_model_through_the_router(render: Render) -> None:
    objects = render(scenario("two-models-gpu-keda"))
    job = by_kind(objects, "Job")[0]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "test"
    main = pod_spec(job)["containers"][0]
    env = env_of(main)
    assert env["ROUTER"]["value"] == f"{PREFIX}-router:8001"
    assert env["MODEL"]["value"] == "simple"
    script = main["args"][0]
    assert "modelport loadtest" in script and "--random" in script
    assert "exit $status" in script  # the Job fails when the load test does
    assert not by_kind(render(scenario("disabled")), "Job")


def test_dev_sync_puts_writable_sources_first_on_the_path(render: Render) -> None:
    objects = render(scenario("minimal"), sets=("devSync.enabled=true",))
    for deployment in by_kind(objects, "Deployment"):
        spec = pod_spec(deployment)
        assert spec["initContainers"][0]["name"] == "dev-sync-seed"
        main = spec["containers"][0]
        assert env_of(main)["PYTHONPATH"]["value"] == "/opt/modelport-dev"
        assert {"name": "dev-src", "mountPath": "/opt/modelport-dev"} in main["volumeMounts"]


# --- values schema -------------------------------------------------------------------


@pytest.mark.parametrize(
    "assignment",
    [
        "router.replicaz=3",
        "models[0].name=a,models[0].gpus=1",
        "observability.grafanaDashbord.enabled=true",
        "models[0].name=a,models[0].autoscaling.mode=magic",
        "models[0].name=Bad_Name",
    ],
)
def test_values_schema_rejects_misspelled_or_invalid_keys(
    render_error: Callable[..., str], assignment: str
) -> None:
    error = render_error(sets=(assignment,))
    assert "schema" in error.lower(), error


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.name)
def test_notes_tell_how_to_reach_the_router_and_run_an_inference(helm: Path, values: Path) -> None:
    done = run_helm(
        helm,
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        "serving",
        "--dry-run=client",
        "--values",
        str(values),
    )
    assert done.returncode == 0, done.stderr
    notes = done.stdout.split("NOTES:", 1)[1]
    settings = yaml.safe_load(values.read_text()) or {}
    if settings.get("router", {}).get("enabled", True):
        assert f"port-forward svc/{PREFIX}-router 8001:8001" in notes
    models = settings.get("models", [])
    if models and settings.get("router", {}).get("enabled", True):
        assert f"--model {models[0]['name']} --random" in notes
        tls = settings.get("tls", {}).get("enabled", False)
        assert ("-cacert" in notes) is tls and ("-plaintext" in notes) is not tls
    elif not models:
        assert "No models are deployed yet" in notes
