"""What each RPC of each service asks of the policy: the action, the model it names,
whether its answer lists models (and is filtered to those the caller may use),
and whether it is a write that goes to the audit log.

One table per gRPC service, checked by a test against the services' descriptors:
an RPC added to a .proto without a line here fails that test (and is refused at
run time), so nothing new is ever open by accident.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modelport.artifacts.refs import Ref
from modelport.errors import InvalidInput


@dataclass(frozen=True)
class RpcAccess:
    # None: any authenticated caller (server liveness, readiness, metadata).
    action: str | None
    # The model a request names ("" for none); None when the RPC is not about one model.
    model: Callable[[Any], str] | None = None
    # The answer lists models: `keep(response, allowed)` leaves in it only the models
    # for which `allowed(model)` holds (those the caller may `action`).
    keep: Callable[[Any, Callable[[str], bool]], Any] | None = None
    # A change (registry write, model control): one audit event per call, whatever its outcome.
    audited: bool = False
    # Client-streaming or bidi: `model` reads each message, checked as it arrives.
    per_message: bool = False
    # Client-streaming uploads: the bytes a message carries, counted against the
    # tenant's daily upload allowance.
    bytes_of: Callable[[Any], int] | None = None
    # The request names something a tenant owns rather than a model (a training job):
    # `owned(request)` is its id, which the server's `AccessControl(owner_of=…)` maps
    # to the model it is about and the tenant that created it (`Policy.allows_owned`).
    owned: Callable[[Any], str] | None = None

    @property
    def lists(self) -> bool:
        return self.keep is not None


def _keep(field: str, key: str = "name") -> Callable[[Any, Callable[[str], bool]], Any]:
    """Filter the repeated `field` of a response by each item's `key`."""

    def keep(response: Any, allowed: Callable[[str], bool]) -> Any:
        items = getattr(response, field)
        kept = [item for item in items if allowed(getattr(item, key))]
        if len(kept) != len(items):
            del items[:]
            items.extend(kept)
        return response

    return keep


def _keep_replica_state(state: Any, allowed: Callable[[str], bool]) -> Any:
    """A replica's pushed state keeps only the models the caller may see: those it
    serves, those loading, and (on a pool replica) those in the pool."""
    _keep("served")(state, allowed)
    _keep("loads")(state, allowed)
    if state.HasField("pool"):
        _keep("models")(state.pool, allowed)
    return state


def _keep_event(event: Any, allowed: Callable[[str], bool]) -> Any:
    """A watch event of a model the caller may not read is dropped (None); events
    about no model (CAUGHT_UP) pass."""
    return event if not event.model or allowed(event.model) else None


def _keep_jobs(response: Any, allowed: Callable[..., bool]) -> Any:
    """A job listing keeps the jobs the caller may see: `allowed(model, owner)` on the
    job's base model and the tenant that created it."""
    jobs = response.jobs
    kept = [j for j in jobs if allowed(_ref_model(j, "model"), j.requested_by.tenant)]
    if len(kept) != len(jobs):
        del jobs[:]
        jobs.extend(kept)
    return response


def _id(request: Any) -> str:
    return str(request.id)


def _name(request: Any) -> str:
    return str(request.name)


def _model_name(request: Any) -> str:
    return str(request.model_name)


def _model(request: Any) -> str:
    return str(request.model)


def _ref_model(request: Any, field: str = "ref") -> str:
    text = str(getattr(request, field))
    try:
        return Ref.parse(text).model
    except InvalidInput:
        return text  # the servicer reports the malformed ref; the policy sees the text


def _source_model(request: Any) -> str:
    return _ref_model(request, "source")


def _dataset(request: Any) -> str:
    """A dataset ref is NAME or NAME:SHA256-PREFIX: the policy sees the name."""
    return str(request.ref).partition(":")[0]


CONTROL = RpcAccess("model-control", audited=True)

INFERENCE: dict[str, RpcAccess] = {
    "ServerLive": RpcAccess(None),
    "ServerReady": RpcAccess(None),
    "ServerMetadata": RpcAccess(None),
    "ModelReady": RpcAccess("metadata", _name),
    "ModelMetadata": RpcAccess("metadata", _name),
    "ModelConfig": RpcAccess("metadata", _name),
    "ModelInfer": RpcAccess("infer", _model_name),
    "ModelStreamInfer": RpcAccess("stream", _model_name, per_message=True),
    # An empty name asks for every model: the answer keeps those the caller may see.
    "ModelStatistics": RpcAccess("statistics", _name, keep=_keep("model_stats")),
    "RepositoryIndex": RpcAccess("metadata", keep=_keep("models")),
    "RepositoryModelLoad": RpcAccess("model-control", _model_name, audited=True),
    "RepositoryModelUnload": RpcAccess("model-control", _model_name, audited=True),
    # Server-wide administration: model control on no particular model.
    "SystemSharedMemoryStatus": RpcAccess("model-control"),
    "SystemSharedMemoryRegister": CONTROL,
    "SystemSharedMemoryUnregister": CONTROL,
    "CudaSharedMemoryStatus": RpcAccess("model-control"),
    "CudaSharedMemoryRegister": CONTROL,
    "CudaSharedMemoryUnregister": CONTROL,
    "TraceSetting": RpcAccess("model-control", _model_name, audited=True),
    "LogSettings": CONTROL,
}

REGISTRY: dict[str, RpcAccess] = {
    "CreateModel": RpcAccess("push", _name, audited=True),
    "GetModel": RpcAccess("read", _name),
    "ListModels": RpcAccess("read", keep=_keep("models")),
    "DeleteModel": RpcAccess("delete", _name, audited=True),
    # The model is in the first message's header.
    "UploadVersion": RpcAccess(
        "push",
        lambda r: str(r.header.model),
        audited=True,
        per_message=True,
        bytes_of=lambda r: len(r.chunk),
    ),
    "DownloadVersion": RpcAccess("read", _ref_model),
    "GetVersion": RpcAccess("read", _ref_model),
    "ListVersions": RpcAccess("read", _model),
    "DeleteVersion": RpcAccess("delete", _model, audited=True),
    "SetAlias": RpcAccess("alias", _model, audited=True),
    "DeleteAlias": RpcAccess("alias", _model, audited=True),
    "RollbackAlias": RpcAccess("alias", _model, audited=True),
    "ListAliasHistory": RpcAccess("read", _model),
    "Resolve": RpcAccess("read", _ref_model),
    "SetTrafficPolicy": RpcAccess("policy", _model, audited=True),
    "GetTrafficPolicy": RpcAccess("read", _model),
    # Where the shared pool serves a model: part of its serving policy.
    "SetPoolPlacement": RpcAccess("policy", lambda r: str(r.placement.model), audited=True),
    "GetPoolPlacement": RpcAccess("read", _model),
    "ListPoolPlacements": RpcAccess("read", keep=_keep("placements", "model")),
    # Named models are checked; with none, events of unreadable models are left out.
    "Watch": RpcAccess("read", keep=_keep_event),
    "ListAuditEvents": RpcAccess("admin", _model, keep=_keep("events", "model")),
    # A derived version is a new version of the source's model.
    "DeriveVersion": RpcAccess("push", _source_model, audited=True),
    "GetDeriveJob": RpcAccess("read"),  # names a job, not a model: readers of every model
    "ListDeriveJobs": RpcAccess("read", _model, keep=_keep("jobs", "model")),
    # The job's worker, which also proves itself with the job's token.
    "GetDeriveWork": RpcAccess("push"),
    "ReportDeriveProgress": RpcAccess("push"),
}

# Training datasets, on the registry's port: dataset names take the policy's model
# patterns (a tenant's `{tenant}-*` grant covers its datasets too).
DATASETS: dict[str, RpcAccess] = {
    "UploadDataset": RpcAccess(
        "push",
        lambda r: str(r.header.name),
        audited=True,
        per_message=True,
        bytes_of=lambda r: len(r.chunk),
    ),
    "GetDataset": RpcAccess("read", _dataset),
    "ListDatasets": RpcAccess("read", _name, keep=_keep("datasets")),
    "DownloadDataset": RpcAccess("read", _dataset),
}

# Fine-tuning jobs: a job pushes a new version of its base model. A job is its
# creator's: the RPCs that name one are authorized on its base model for the tenant
# that created it (or an admin of that model); to anyone else it does not exist.
TRAINING: dict[str, RpcAccess] = {
    "CreateJob": RpcAccess("push", lambda r: _ref_model(r, "model"), audited=True),
    "GetJob": RpcAccess("read", owned=_id),
    "ListJobs": RpcAccess("read", keep=_keep_jobs),
    "CancelJob": RpcAccess("push", owned=_id, audited=True),
    "WatchEvents": RpcAccess("read", owned=_id),
    "ListCheckpoints": RpcAccess("read", owned=_id),
    "ReportEvents": RpcAccess("push"),  # the job's workers
}

ROUTER: dict[str, RpcAccess] = {
    "ListRoutes": RpcAccess("metadata", _model_name, keep=_keep("models")),
}

# A pool replica's state, followed by routers; a prefetch loads a model as its
# first request would, so it asks what inference asks.
POOL: dict[str, RpcAccess] = {
    "Watch": RpcAccess("metadata", keep=_keep_replica_state),
    "Prefetch": RpcAccess("infer", _model),
}


def _scaled_model(request: Any) -> str:
    ref = getattr(request, "scaledObjectRef", request)  # GetMetrics wraps the ref
    return str(ref.scalerMetadata.get("model", ""))


# KEDA asking the router about demand for a model held at zero: its statistics.
SCALER: dict[str, RpcAccess] = {
    name: RpcAccess("statistics", _scaled_model)
    for name in ("IsActive", "StreamIsActive", "GetMetricSpec", "GetMetrics")
}

SERVICES: dict[str, dict[str, RpcAccess]] = {
    "inference.GRPCInferenceService": INFERENCE,
    "modelport.registry.v1.ModelRegistry": REGISTRY,
    "modelport.registry.v1.DatasetRegistry": DATASETS,
    "modelport.training.v1.Training": TRAINING,
    "modelport.router.v1.RouterAdmin": ROUTER,
    "modelport.pool.v1.PoolReplica": POOL,
    "externalscaler.ExternalScaler": SCALER,
}

# Open to anyone who reached the port (through mTLS when it is on): probes and tools.
OPEN_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                           "grpc.reflection.v1.ServerReflection"})  # fmt: skip


def access_of(full_method: str) -> RpcAccess | None:
    """The entry for '/package.Service/Method'; None for open services.

    An RPC of a known service that has no entry raises: refused, not waved through.
    """
    service, _, method = full_method.lstrip("/").partition("/")
    if service in OPEN_SERVICES:
        return None
    table = SERVICES.get(service)
    entry = table.get(method) if table is not None else None
    if entry is None:
        raise KeyError(f"no access rule for {full_method}")
    return entry
