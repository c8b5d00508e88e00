"""Scale to zero in the chart: KEDA's trigger is the router's external scaler, and the
router's rendered arguments hold that model's requests (parsed by the real CLI)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from modelport.cli.serve import serve
from modelport.router.settings import RouterSettings

from tests.helm.helmchart import PREFIX, by_kind, container, named, scenario

Render = Callable[..., list]


def router_settings(objects: list) -> RouterSettings:
    args = container(named(objects, "Deployment", f"{PREFIX}-router"))["args"]
    assert args[:2] == ["serve", "router"]
    command = serve.get_command(None, "router")  # type: ignore[arg-type]
    assert command is not None
    context = command.make_context("router", list(args[2:]))
    return RouterSettings(**context.params)


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
