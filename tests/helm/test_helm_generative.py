"""Generative deployments in the chart: each engine value becomes a `serve inference`
flag the real CLI parses into InferenceSettings, tensor parallelism follows the pod's
GPUs, autoscaling follows waiting sequences, and the router serves the OpenAI API."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from modelport.inference.settings import InferenceSettings
from modelport.router.settings import RouterSettings

from tests.helm.helmchart import PREFIX, container, named, scenario
from tests.helm.test_helm_elastic import parsed  # rendered args through the real CLI

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)

Render = Callable[..., list]


def test_generative_values_reach_the_engine_flags(render: Render) -> None:
    objects = render(scenario("generative-gpu"))
    gpu = InferenceSettings(**parsed(objects, "model-tiny-llama", "inference"))
    assert gpu.models == ("tiny-llama@production",)
    assert (gpu.generative_engine, gpu.kv_memory_fraction, gpu.max_num_seqs) == (
        "continuous", 0.9, 64,
    )  # fmt: skip
    assert gpu.tensor_parallel_size == 0, "one GPU: nothing to split"
    assert gpu.engine_overrides(torch_threads=1).kv_memory_fraction == 0.9
    cpu = InferenceSettings(**parsed(objects, "model-chat-cpu", "inference"))
    assert (cpu.generative_engine, cpu.kv_cache_mb, cpu.max_num_seqs) == ("continuous", 512, 16)
    assert cpu.tensor_parallel_size == 0 and cpu.kv_memory_fraction == 0.0
    # Autoscaling follows sequences waiting for a slot: KEDA's query and the HPA's metric.
    (trigger,) = named(objects, "ScaledObject", f"{PREFIX}-model-tiny-llama")["spec"]["triggers"]
    assert trigger["metadata"]["query"] == (
        'sum(modelport_generation_waiting{namespace="serving",model="tiny-llama"})'
    )
    hpa = named(objects, "HorizontalPodAutoscaler", f"{PREFIX}-model-chat-cpu")
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "modelport_generation_waiting"


def test_tensor_parallelism_defaults_to_the_pods_gpus(render: Render) -> None:
    sets = ("models[0].gpu=2", "models[0].generative.engine=vllm")
    objects = render(scenario("generative-gpu"), sets=sets)
    settings = InferenceSettings(**parsed(objects, "model-tiny-llama", "inference"))
    assert (settings.generative_engine, settings.tensor_parallel_size) == ("vllm", 2)
    limits = container(named(objects, "Deployment", f"{PREFIX}-model-tiny-llama"))["resources"]
    assert limits["limits"]["nvidia.com/gpu"] == 2


def test_the_router_serves_the_openai_api_on_its_service(render: Render) -> None:
    objects = render(scenario("generative-gpu"))
    assert RouterSettings(**parsed(objects, "router", "router")).http_port == 8000
    ports = {p["name"]: p for p in named(objects, "Service", f"{PREFIX}-router")["spec"]["ports"]}
    assert ports["http"]["port"] == 8000 and ports["http"]["targetPort"] == "http"
    off = render(scenario("generative-gpu"), sets=("router.openai.enabled=false",))
    assert RouterSettings(**parsed(off, "router", "router")).http_port == -1


def test_non_generative_models_keep_in_flight_autoscaling(render: Render) -> None:
    objects = render(scenario("two-models-gpu-keda"))
    args = container(named(objects, "Deployment", f"{PREFIX}-model-resnet50"))["args"]
    assert not [a for a in args if a.startswith(("--kv-", "--generative", "--tensor"))]
    (trigger,) = named(objects, "ScaledObject", f"{PREFIX}-model-resnet50")["spec"]["triggers"]
    assert "modelport_inference_in_flight" in trigger["metadata"]["query"]


@pytest.mark.parametrize(
    ("sets", "error"),
    [
        (("models[0].generative.tensorParallelSize=4",), "needs that many GPUs"),
        (("models[0].gpu=2",), "tensor parallelism needs engine vllm"),
        (("models[0].generative.kvMemoryFraction=1.5",), "kvMemoryFraction"),
    ],
)
def test_impossible_generative_values_are_refused(
    render_error: Callable[..., str], sets: tuple[str, ...], error: str
) -> None:
    assert error in render_error(scenario("generative-gpu"), sets=sets)


def test_helm_test_streams_tokens_from_a_generative_model(render: Render) -> None:
    job = named(render(scenario("generative-gpu")), "Job", f"{PREFIX}-loadtest")
    script = container(job)["args"][0]
    assert "--generate" in script and "--random" not in script
