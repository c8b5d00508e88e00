"""One derive job end to end, as the registry's worker: `modelport models derive-worker`.

It asks the registry for its job (with the token it was started with),
pulls the parent, derives the child, measures both on the job's data,
reports each stage (DERIVE_PROGRESS events on Watch), and uploads the child
with its lineage and metrics; the registry applies the gate in the upload's
transaction. Whatever fails is reported as the job's failure, in words.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import traceback
from pathlib import Path

from modelport.client.registry import RegistryClient
from modelport.compression.derive import derive_folder
from modelport.compression.evaluate import evaluate
from modelport.compression.spec import DeriveSpec, check_runnable_here, cuda_capability
from modelport.errors import ModelportError
from modelport.proto.modelport.registry.v1 import derive_pb2 as dpb

log = logging.getLogger(__name__)


def spec_of(job: dpb.DeriveJob) -> DeriveSpec:
    s = job.spec
    return DeriveSpec(s.prune, s.prune_pattern, s.dtype, s.quantize, s.compile)


def run_job(registry_address: str, job_id: str, token: str) -> int:
    """Returns the exit status: 0 when the child was stored (passed the gate or not)."""
    with RegistryClient(registry_address, timeout=60.0) as registry:

        def report(stage: str, fraction: float, message: str = "") -> None:
            registry.report_derive_progress(job_id, token, stage, fraction, message)

        try:
            work = registry.derive_work(job_id, token)
            _run(registry, work, token, report)
            return 0
        except ModelportError as exc:
            message = str(exc)
        except Exception as exc:  # a bug or a torch error: say what, keep the trace in the log
            log.error("derive job %s failed:\n%s", job_id, traceback.format_exc())
            message = f"{type(exc).__name__}: {exc}"
        registry.report_derive_progress(job_id, token, "failed", 1.0, message, failed=True)
        return 1


def _run(registry: RegistryClient, work: dpb.DeriveWork, token: str, report) -> None:  # type: ignore[no-untyped-def]
    job = work.job
    spec = spec_of(job)
    spec.check()
    check_runnable_here(spec, cuda_capability())
    with tempfile.TemporaryDirectory(prefix="modelport-derive-") as tmp:
        root = Path(tmp)
        report(f"downloading {job.parent}", 0.02)
        parent_dir = root / "parent"
        registry.pull(job.parent, parent_dir)

        def progress(stage: str, fraction: float) -> None:
            report(stage, 0.05 + 0.45 * fraction)

        derived = derive_folder(parent_dir, spec, root / "child", progress)
        metrics: dict[str, float] = {}
        labels = {"modelport.derive.method": spec.method()}
        if work.eval_data:
            report("measuring parent and child", 0.55)
            evaluation = evaluate(
                parent_dir, derived.model_dir, work.eval_data, job.eval_format, job.metric
            )
            metrics = evaluation.metrics
            labels["modelport.eval.metric"] = evaluation.metric
            labels["modelport.eval.data-sha256"] = hashlib.sha256(work.eval_data).hexdigest()
        report("uploading", 0.9)
        registry.push(
            derived.model_dir,
            name=job.model,
            parent=job.parent,
            labels=labels,
            metrics=metrics,
            create_model=False,
            lineage=dpb.Lineage(
                parent=job.parent, method=spec.method(), parameters=derived.parameters
            ),
            derive_job=job.id,
            derive_token=token,
        )
