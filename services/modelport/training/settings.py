"""Settings of `modelport serve training` (flags and MODELPORT_* variables come from here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from modelport.common.settings import ServerSettings, setting
from modelport.errors import InvalidInput


@dataclass(frozen=True)
class TrainingSettings(ServerSettings):
    grpc_port: int = setting(8004, "gRPC port.")
    data_dir: Path = setting(
        Path("modelport-training"),
        "Jobs, their checkpoints and exports (a PVC in the cluster).",
        path="dir",
    )
    registry: str = setting("127.0.0.1:8003", "Registry: base models, datasets, results.")
    executor: Literal["local", "kubernetes"] = setting(
        "local",
        "local: torchrun processes here; kubernetes: a Job (or Kubeflow TrainJob) per job.",
    )
    max_concurrent_jobs: int = setting(1, "Jobs running at once.")
    max_restarts: int = setting(2, "Worker-group restarts from the newest checkpoint.")
    worker_threads: int = setting(
        0, "Torch threads per worker process (0: the cores divided by the workers)."
    )
    # The Kubernetes executor (training/kubernetes.py).
    namespace: str = setting("", "kubernetes: where jobs run (default: this pod's).")
    image: str = setting("", "kubernetes: the worker image (default: this pod's).")
    service_address: str = setting(
        "", "kubernetes: how workers reach this service's gRPC port (ReportEvents)."
    )
    node_selectors: tuple[str, ...] = setting(
        (), "kubernetes: KEY=VALUE for GPU worker pods (repeatable).", flag="--node-selector"
    )
    worker_tolerations: tuple[str, ...] = setting(
        (),
        "kubernetes: a toleration of every worker pod, KEY[=VALUE][:EFFECT][@SECONDS] "
        "(e.g. dedicated=training:NoSchedule; repeatable).",
        flag="--worker-toleration",
    )
    use_trainjob: bool = setting(
        True, "kubernetes: a Kubeflow TrainJob when its CRD is installed, else a batch/v1 Job."
    )
    gpu_resource: str = setting("nvidia.com/gpu", "kubernetes: the GPU resource name.")
    worker_cpu_request: str = setting("1", "kubernetes: CPU request of a worker pod.")
    worker_memory_limit: str = setting("8Gi", "kubernetes: memory limit of a worker pod.")
    # How often the core polls the executor for a running job's state.
    poll_seconds: float = setting(0.2, "Seconds between executor polls.", cli=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_concurrent_jobs < 1:
            raise InvalidInput(f"max_concurrent_jobs={self.max_concurrent_jobs}: at least 1")
        if self.worker_threads < 0:
            raise InvalidInput(f"worker_threads={self.worker_threads}: cannot be negative")
        if self.max_restarts < 0:
            raise InvalidInput(f"max_restarts={self.max_restarts}: cannot be negative")
        _ = self.node_selector  # a malformed KEY=VALUE fails before anything starts
        _ = self.tolerations

    @property
    def node_selector(self) -> dict[str, str]:
        selector: dict[str, str] = {}
        for item in self.node_selectors:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise InvalidInput(f"node selector '{item}': expected KEY=VALUE")
            selector[key.strip()] = value.strip()
        return selector

    @property
    def tolerations(self) -> list[dict[str, Any]]:
        return [parse_toleration(item) for item in self.worker_tolerations]


TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def parse_toleration(text: str) -> dict[str, Any]:
    """`KEY[=VALUE][:EFFECT][@SECONDS]` → a core/v1 Toleration (kubectl's taint syntax):
    `=VALUE` tolerates that value (operator Equal), no `=` any value (Exists); `*` as
    the key tolerates every taint; `@SECONDS` is tolerationSeconds (NoExecute only)."""
    rest, at, seconds = text.strip().partition("@")
    rest, colon, effect = rest.partition(":")
    key, equals, value = rest.partition("=")
    key = key.strip()
    toleration: dict[str, Any] = {}
    if key != "*":
        if not key:
            raise InvalidInput(f"worker toleration '{text}': expected KEY[=VALUE][:EFFECT]")
        toleration["key"] = key
    if equals:
        if key == "*":
            raise InvalidInput(f"worker toleration '{text}': '*' takes no value")
        toleration.update(operator="Equal", value=value.strip())
    else:
        toleration["operator"] = "Exists"
    if colon:
        if effect not in TOLERATION_EFFECTS:
            raise InvalidInput(
                f"worker toleration '{text}': effect must be one of {', '.join(TOLERATION_EFFECTS)}"
            )
        toleration["effect"] = effect
    if at:
        if effect != "NoExecute" or not seconds.isdigit():
            raise InvalidInput(
                f"worker toleration '{text}': @SECONDS is a whole number, with effect NoExecute"
            )
        toleration["tolerationSeconds"] = int(seconds)
    return toleration
