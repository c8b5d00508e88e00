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
    # The answer lists models: only those the caller may `action` stay in it.
    lists: bool = False
    # A change (registry write, model control): one audit event per call, whatever its outcome.
    audited: bool = False
    # Client-streaming or bidi: `model` reads each message, checked as it arrives.
    per_message: bool = False


def _name(request: Any) -> str:
    return str(request.name)


def _model_name(request: Any) -> str:
    return str(request.model_name)


def _model(request: Any) -> str:
    return str(request.model)


def _ref_model(request: Any) -> str:
    try:
        return Ref.parse(request.ref).model
    except InvalidInput:
        return str(request.ref)  # the servicer reports the malformed ref; the policy sees the text


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
    "ModelStatistics": RpcAccess("statistics", _name, lists=True),
    "RepositoryIndex": RpcAccess("metadata", lists=True),
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
    "ListModels": RpcAccess("read", lists=True),
    "DeleteModel": RpcAccess("delete", _name, audited=True),
    # The model is in the first message's header.
    "UploadVersion": RpcAccess(
        "push", lambda r: str(r.header.model), audited=True, per_message=True
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
    # Named models are checked; with none, events of unreadable models are left out.
    "Watch": RpcAccess("read", lists=True),
    "ListAuditEvents": RpcAccess("admin", _model, lists=True),
}

ROUTER: dict[str, RpcAccess] = {
    "ListRoutes": RpcAccess("metadata", lists=True),
}

SERVICES: dict[str, dict[str, RpcAccess]] = {
    "inference.GRPCInferenceService": INFERENCE,
    "modelport.registry.v1.ModelRegistry": REGISTRY,
    "modelport.router.v1.RouterAdmin": ROUTER,
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
