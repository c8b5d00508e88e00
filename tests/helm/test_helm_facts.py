"""The facts users of the chart rely on about workloads: GPUs, probes, shutdown, the CLI
contract, autoscaling, the registry's storage and the values schema."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helm.helmchart import (
    PREFIX,
    SCENARIOS,
    Render,
    arg_value,
    by_kind,
    container,
    env_of,
    named,
    pod_spec,
    scenario,
)

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)

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
    render: Render, values: Path
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


def test_router_fast_path_value_reaches_the_routers_args(render: Render) -> None:
    for name, expected in (("defaults", "auto"), ("minimal", "off")):
        router = named(render(scenario(name)), "Deployment", f"{PREFIX}-router")
        assert arg_value(container(router)["args"], "--fast-path") == expected, name


def test_model_fast_path_value_reaches_the_inference_args(render: Render) -> None:
    for name, model, expected in (("two-models-gpu-keda", "resnet50", "auto"),
                                  ("minimal", "simple", "off")):  # fmt: skip
        deployment = named(render(scenario(name)), "Deployment", f"{PREFIX}-model-{model}")
        assert arg_value(container(deployment)["args"], "--fast-path") == expected, name


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
        (("models[0].name=a", "models[0].autoscaling.minReplicas=0"), "only keda scales to zero"),
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
