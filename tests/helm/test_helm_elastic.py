"""Scale to zero in the chart: KEDA's trigger is the router's external scaler, and the
router's rendered arguments hold that model's requests (parsed by the real CLI)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from modelport.cli.serve import serve
from modelport.inference.settings import InferenceSettings, memory_limit_bytes
from modelport.router.settings import RouterSettings

from tests.helm.helmchart import PREFIX, by_kind, container, named, scenario

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)

Render = Callable[..., list]


def parsed(objects: list, deployment: str, service: str) -> dict:
    """The rendered container args of `deployment`, parsed by `modelport serve <service>`."""
    args = container(named(objects, "Deployment", f"{PREFIX}-{deployment}"))["args"]
    assert args[:2] == ["serve", service]
    command = serve.get_command(None, service)  # type: ignore[arg-type]
    assert command is not None
    return dict(command.make_context(service, list(args[2:])).params)


def router_settings(objects: list) -> RouterSettings:
    return RouterSettings(**parsed(objects, "router", "router"))


def test_a_model_at_min_replicas_zero_is_scaled_by_the_router(render: Render) -> None:
    objects = render(scenario("scale-to-zero"))
    scaled = named(objects, "ScaledObject", f"{PREFIX}-model-mlp")
    assert scaled["spec"]["minReplicaCount"] == 0
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "external-push"
    assert trigger["metadata"] == {
        "scalerAddress": f"{PREFIX}-router.serving.svc:8001",
        "model": "mlp",
        "targetPendingRequests": "6",
    }
    settings = router_settings(objects)
    assert settings.hold_models == ("mlp",), "only the scale-to-zero model is held"
    assert (settings.idle_seconds, settings.hold_queue_size) == (600.0, 64)
    # The other model keeps its CPU HPA and is not held.
    assert named(objects, "HorizontalPodAutoscaler", f"{PREFIX}-model-simple")
    assert len(by_kind(objects, "ScaledObject")) == 1


def test_routers_hold_nothing_without_a_scale_to_zero_model(render: Render) -> None:
    settings = router_settings(render(scenario("two-models-gpu-keda")))
    assert settings.hold_models == ()


@pytest.mark.parametrize(
    "sets",
    [
        ("models[0].name=a", "models[0].autoscaling.mode=keda",
         "models[0].autoscaling.minReplicas=0", "models[0].autoscaling.keda.trigger=prometheus"),
    ],
)  # fmt: skip
def test_zero_replicas_on_prometheus_is_refused(
    render_error: Callable[..., str], sets: tuple[str, ...]
) -> None:
    assert "minReplicas 0 needs autoscaling.keda.trigger router" in render_error(sets=sets)


def inference_settings(objects: list, name: str) -> InferenceSettings:
    return InferenceSettings(**parsed(objects, f"model-{name}", "inference"))


def test_pools_serve_on_demand_with_gpu_selectors_and_a_budget_from_limits(
    render: Render,
) -> None:
    objects = render(scenario("pool"))
    gpu = inference_settings(objects, "gpu-pool")
    assert gpu.pool and gpu.models == () and gpu.pool_alias == "production"
    assert gpu.memory_budget_mb == 0, "derived at run time from the container's memory limit"
    deployment = named(objects, "Deployment", f"{PREFIX}-model-gpu-pool")
    pod = deployment["spec"]["template"]["spec"]
    main = container(deployment)
    assert main["resources"]["limits"] == {"memory": "24Gi", "nvidia.com/gpu": 1}
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    # Pool pods answer health for the server (no single model to wait for).
    assert main["readinessProbe"]["grpc"].get("service", "") == ""
    # Routers discover every pool under one reserved name; each pool selects its own pods.
    service = named(objects, "Service", f"{PREFIX}-model-gpu-pool")
    assert service["metadata"]["labels"]["modelport.io/model"] == "modelport-pool"
    assert service["spec"]["selector"]["modelport.io/pool"] == "gpu-pool"
    cpu = inference_settings(objects, "cpu-pool")
    assert cpu.pool_budget_bytes() == 3072 * 1024 * 1024
    dedicated = inference_settings(objects, "fraud")
    assert not dedicated.pool and dedicated.models == ("fraud@production",)


def test_the_budget_is_derived_from_the_cgroup_memory_limit(tmp_path: Path) -> None:
    limit = tmp_path / "memory.max"
    limit.write_text(f"{4 << 30}\n")
    assert memory_limit_bytes((str(limit),)) == 4 << 30
    limit.write_text("max\n")  # no limit: the machine's memory
    assert memory_limit_bytes((str(limit),)) > 0
