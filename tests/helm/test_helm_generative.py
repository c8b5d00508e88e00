"""Generative deployments in the chart: each engine value becomes a `serve inference`
flag the real CLI parses into InferenceSettings, tensor parallelism follows the pod's
GPUs, autoscaling follows waiting sequences, and the router serves the OpenAI API."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from modelport.errors import FailedPrecondition
from modelport.inference.generative.vllm_process import PYTHON_ENV, vllm_python
from modelport.inference.settings import InferenceSettings
from modelport.router.settings import RouterSettings

from tests.helm.helmchart import PREFIX, container, named, scenario
from tests.helm.test_helm_elastic import parsed  # rendered args through the real CLI
from tests.helm.test_skaffold import dockerfile_stages

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


def test_a_vllm_model_runs_the_vllm_image_with_its_python(
    render: Render, monkeypatch: pytest.MonkeyPatch
) -> None:
    sets = ("models[0].gpu=2", "models[0].generative.engine=vllm")
    objects = render(scenario("generative-gpu"), sets=sets)
    gpu = container(named(objects, "Deployment", f"{PREFIX}-model-tiny-llama"))
    # The Dockerfile's runtime-vllm target, its CUDA build: 0.1.0 + image.vllm.suffix + -cuda.
    assert gpu["image"] == "ghcr.io/modelport/modelport:0.1.0-vllm-cuda"
    settings = InferenceSettings(**parsed(objects, "model-tiny-llama", "inference"))
    assert (settings.generative_engine, settings.tensor_parallel_size) == ("vllm", 2)
    env = {e["name"]: e.get("value") for e in gpu["env"]}
    python = dockerfile_stages()["runtime-vllm"].split(f"{PYTHON_ENV}=", 1)[1].split()[0]
    assert env[PYTHON_ENV] == python == "/opt/vllm/bin/python"
    # The service reads that variable to find vLLM (here the path is absent: a clear refusal).
    monkeypatch.setenv(PYTHON_ENV, env[PYTHON_ENV])
    with pytest.raises(FailedPrecondition, match="/opt/vllm/bin/python is not an executable"):
        vllm_python()
    # The continuous engine's model and every other component keep the lean image.
    cpu = container(named(objects, "Deployment", f"{PREFIX}-model-chat-cpu"))
    assert cpu["image"] == "ghcr.io/modelport/modelport:0.1.0"
    assert PYTHON_ENV not in {e["name"] for e in cpu["env"]}
    # An image of one's own (skaffold's vllm profile sets both): no suffix is added.
    own = (
        "models[1].generative.engine=vllm",
        "image.vllm.repository=registry.local/modelport-vllm",
        "image.vllm.tag=abc1234",
    )
    objects = render(scenario("generative-gpu"), sets=own)
    cpu = container(named(objects, "Deployment", f"{PREFIX}-model-chat-cpu"))
    assert cpu["image"] == "registry.local/modelport-vllm:abc1234"
    gpu = container(named(objects, "Deployment", f"{PREFIX}-model-tiny-llama"))
    assert gpu["image"] == "ghcr.io/modelport/modelport:0.1.0-cuda"


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
