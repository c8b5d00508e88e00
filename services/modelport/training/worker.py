"""`python -m modelport.training.worker SPEC.json`: one training process.

Started by torchrun (`torch.distributed.run`), locally by the local executor
and in a pod by the Kubernetes executor, so RANK / WORLD_SIZE / MASTER_ADDR
come from it; with `--max-restarts` torchrun restarts a failed worker group,
which resumes from the newest checkpoint. In a cluster the spec names
registry references instead of local folders, and the worker fetches the
base version and the dataset itself.

Rank 0 exports the result to `output/` (written aside, then renamed) and
emits `done`. A job that can never succeed (bad data, a model that cannot be
trained) writes `failed.json` and exits 0, so torchrun does not retry it; a
crash exits non-zero and torchrun restarts the group from the checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("modelport.training.worker")


@dataclass
class WorkerSpec:
    job_id: str
    kind: str
    method: str
    hyperparameters: dict[str, Any]
    seed: int
    validation_fraction: float
    work_dir: str
    base_model_dir: str = ""
    dataset_path: str = ""
    # Cluster: fetch these from the registry into work_dir first.
    registry: str = ""
    base_ref: str = ""
    dataset_ref: str = ""
    report_address: str = ""
    attempt: str = ""
    # Torch threads per worker process (0: this machine's cores over the workers).
    threads: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(vars(self), indent=2))

    @classmethod
    def read(cls, path: Path) -> WorkerSpec:
        return cls(**json.loads(path.read_text()))


def _topology(threads: int = 0) -> Any:
    import torch
    import torch.distributed as dist

    from modelport.training.loop import Topology

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = torch.device("cpu")
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if world > 1:
        # torchrun's agent keeps one store across restarts of the worker group: without a
        # per-attempt prefix, a restarted group reads the dead group's addresses and never
        # connects.
        store, rank, world = next(dist.rendezvous("env://"))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            store=dist.PrefixStore(f"modelport/attempt-{attempt}", store),
            rank=rank,
            world_size=world,
        )
    # N workers share the cores: more threads than cores make OpenMP's threads wait on
    # each other (on a busy machine one step takes many times longer).
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // max(world, 1)))
    return Topology(rank=rank, world=world, device=device)


def fetch_inputs(spec: WorkerSpec) -> None:
    """Cluster mode: the base version and the dataset from the registry, once per pod."""
    from modelport.client.datasets import DatasetClient
    from modelport.client.registry import RegistryClient

    work = Path(spec.work_dir)
    if not spec.base_model_dir:
        spec.base_model_dir = str(work / "base")
        if not (work / "base" / "config.pbtxt").is_file():
            with RegistryClient(spec.registry) as registry:
                registry.pull(spec.base_ref, work / "base")
    if not spec.dataset_path:
        spec.dataset_path = str(work / "dataset")
        if not Path(spec.dataset_path).is_file():
            with DatasetClient(spec.registry) as datasets:
                datasets.download(spec.dataset_ref, Path(spec.dataset_path))


def build_task(spec: WorkerSpec) -> Any:
    from modelport.training.jobs import Hyperparameters, Method

    params = Hyperparameters.from_json(spec.hyperparameters)
    base, data = Path(spec.base_model_dir), Path(spec.dataset_path)
    if spec.kind == "decoder":
        from modelport.training.decoder_task import DecoderTask

        return DecoderTask(base, data, spec.validation_fraction, Method(spec.method), params)
    from modelport.training.tensor_task import TensorTask

    return TensorTask(base, data, spec.validation_fraction)


def run(spec: WorkerSpec) -> int:
    import torch.distributed as dist

    from modelport.errors import ModelportError
    from modelport.training.jobs import Hyperparameters
    from modelport.training.loop import Stopped, train
    from modelport.training.worker_events import FileSink, NullSink

    work = Path(spec.work_dir)
    topo = _topology(spec.threads)
    sink: Any = NullSink()
    if topo.rank == 0:
        if spec.report_address:
            from modelport.training.report_sink import ReportSink

            sink = ReportSink(spec.report_address, spec.job_id, spec.attempt)
        else:
            sink = FileSink(work / "worker-events.jsonl")
    try:
        if spec.registry:
            fetch_inputs(spec)
        task = build_task(spec)
        task.model.to(topo.device)
        params = Hyperparameters.from_json(spec.hyperparameters)
        metrics = train(task, params, seed=spec.seed, work_dir=work, events=sink, topo=topo)
        if topo.rank == 0:
            partial, output = work / "output.partial", work / "output"
            task.export(partial)
            shutil.rmtree(output, ignore_errors=True)
            os.replace(partial, output)
            result = ""
            if spec.extra.get("register"):
                # In a cluster the pod registers: the service cannot see its disk.
                from modelport.training.registration import register

                result = register(spec.registry, output, metrics=metrics, **spec.extra["register"])
            sink.emit("done", metrics=metrics, result_version=result)
        return 0
    except Stopped as stop:
        log.info("%s", stop)
        return 3
    except ModelportError as error:
        # Bad data or an untrainable model: retrying cannot help, so no non-zero exit.
        if topo.rank == 0:
            (work / "failed.json").write_text(
                json.dumps({"code": error.code, "message": str(error)})
            )
            sink.emit("failed", code=error.code, message=str(error))
        return 0
    finally:
        if topo.distributed and dist.is_initialized():
            dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(message)s")
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m modelport.training.worker SPEC.json", file=sys.stderr)
        return 2
    spec = WorkerSpec.read(Path(args[0]))
    try:
        return run(spec)
    except Exception:
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
