"""Synchronous Python API for the model registry (`modelport models …` uses it too).

Calls raise `ModelportClientError` with the registry's status code and message.

    with RegistryClient("localhost:8003") as registry:
        version = registry.push("models/mlp", name="mlp", aliases=["canary"])
        registry.set_alias("mlp", version.version, "production")
        registry.pull("mlp@production", "/tmp/mlp")
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import grpc

from modelport.artifacts.archive import materialize, pack_directory
from modelport.artifacts.hashing import directory_digest, sha256_of
from modelport.client.channel import ModelportClientError, TlsOptions, sync_channel
from modelport.client.credentials import ON_BEHALF_OF
from modelport.client.registry_derive import DeriveCalls, maps_rpc_errors
from modelport.proto.modelport.registry.v1 import derive_pb2 as dpb
from modelport.proto.modelport.registry.v1 import registry_pb2 as pb
from modelport.proto.modelport.registry.v1 import registry_pb2_grpc

DEFAULT_REGISTRY = "localhost:8003"
CHUNK_BYTES = 1 << 20
SOURCE_DIGEST_LABEL = "modelport.source-digest"


_maps_rpc_errors = maps_rpc_errors


def default_address() -> str:
    return os.environ.get("MODELPORT_REGISTRY", "") or DEFAULT_REGISTRY


def parse_policy(
    split: Mapping[str, int] | None = None,
    shadow_alias: str = "",
    ensemble: Sequence[str] = (),
    scatter: bool = False,
) -> pb.TrafficPolicy:
    policy = pb.TrafficPolicy(
        split=[pb.AliasWeight(alias=a, weight=int(w)) for a, w in (split or {}).items()],
        shadow_alias=shadow_alias,
    )
    if ensemble:
        policy.ensemble.members.extend(ensemble)
    elif scatter:
        policy.scatter.SetInParent()
    return policy


class RegistryClient(DeriveCalls):
    """`address` may be `grpcs://host:port` (TLS with the system CAs) or take `tls`
    (a CA, and a client certificate for mTLS); `api_key` (an API key or a bearer
    JWT) is sent on every call; `on_behalf_of` ("tenant/subject") names the caller a
    service acts for, which the registry's audit events record beside the service."""

    def __init__(
        self,
        address: str = "",
        *,
        timeout: float = 30.0,
        tls: TlsOptions | None = None,
        api_key: str | None = None,
        on_behalf_of: str = "",
    ) -> None:
        self.address = address or default_address()
        self.timeout = timeout
        extra = ((ON_BEHALF_OF, on_behalf_of),) if on_behalf_of else ()
        self._channel = sync_channel(self.address, tls, api_key, metadata=extra)
        self.stub = registry_pb2_grpc.ModelRegistryStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @_maps_rpc_errors
    def wait_ready(self, timeout: float = 10.0) -> None:
        grpc.channel_ready_future(self._channel).result(timeout=timeout)

    # -- audit -------------------------------------------------------------------

    @_maps_rpc_errors
    def audit_events(
        self,
        *,
        model: str = "",
        tenant: str = "",
        action: str = "",
        outcome: str = "",
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> list[pb.AuditEvent]:
        """The audit trail (registry writes, model-control calls), newest first."""
        request = pb.ListAuditEventsRequest(
            model=model, tenant=tenant, action=action, outcome=outcome, limit=limit
        )
        if since is not None:
            request.since.FromNanoseconds(int(since * 1e9))
        if until is not None:
            request.until.FromNanoseconds(int(until * 1e9))
        return list(self.stub.ListAuditEvents(request, timeout=self.timeout).events)

    # -- models ------------------------------------------------------------------

    @_maps_rpc_errors
    def create_model(
        self, name: str, description: str = "", labels: Mapping[str, str] | None = None
    ) -> pb.Model:
        request = pb.CreateModelRequest(name=name, description=description, labels=labels or {})
        return self.stub.CreateModel(request, timeout=self.timeout)

    @_maps_rpc_errors
    def get_model(self, name: str) -> pb.Model:
        return self.stub.GetModel(pb.GetModelRequest(name=name), timeout=self.timeout)

    @_maps_rpc_errors
    def list_models(self) -> list[pb.Model]:
        return list(self.stub.ListModels(pb.ListModelsRequest(), timeout=self.timeout).models)

    @_maps_rpc_errors
    def delete_model(self, name: str, *, force: bool = False) -> None:
        self.stub.DeleteModel(pb.DeleteModelRequest(name=name, force=force), timeout=self.timeout)

    # -- versions ----------------------------------------------------------------

    @_maps_rpc_errors
    def push_archive(
        self,
        archive: Path | str,
        *,
        name: str,
        aliases: Iterable[str] = (),
        parent: str = "",
        labels: Mapping[str, str] | None = None,
        metrics: Mapping[str, float] | None = None,
        create_model: bool = True,
        description: str = "",
        lineage: dpb.Lineage | None = None,
        derive_job: str = "",
        derive_token: str = "",
        force: bool = False,
    ) -> pb.ModelVersion:
        """Upload a tar / tar.gz archive as it is (its sha256 is checked on arrival).

        `derive_job` and `derive_token`: a derive worker uploading its job's child.
        `force`: move `aliases` even where the signature differs from their version's.
        """
        path = Path(archive)
        header = pb.UploadHeader(
            model=name,
            sha256=sha256_of(path),
            labels=labels or {},
            metrics=metrics or {},
            parent=parent,
            aliases=list(aliases),
            create_model=create_model,
            description=description,
            lineage=lineage,
            derive_job=derive_job,
            derive_token=derive_token,
            force=force,
        )

        def messages() -> Iterator[pb.UploadVersionRequest]:
            yield pb.UploadVersionRequest(header=header)
            with path.open("rb") as f:
                while block := f.read(CHUNK_BYTES):
                    yield pb.UploadVersionRequest(chunk=block)

        return self.stub.UploadVersion(messages(), timeout=max(self.timeout, 600.0))

    @_maps_rpc_errors
    def push(
        self,
        model_dir: Path | str,
        *,
        name: str,
        aliases: Iterable[str] = (),
        parent: str = "",
        labels: Mapping[str, str] | None = None,
        metrics: Mapping[str, float] | None = None,
        create_model: bool = True,
        description: str = "",
        lineage: dpb.Lineage | None = None,
        derive_job: str = "",
        derive_token: str = "",
        force: bool = False,
    ) -> pb.ModelVersion:
        """Pack a Triton model folder (or a folder holding only a torch.export
        `model.pt2`) and upload it as the model's next version; `force` moves
        `aliases` even to a new signature."""
        all_labels = {SOURCE_DIGEST_LABEL: directory_digest(model_dir), **(labels or {})}
        with tempfile.TemporaryDirectory(prefix="modelport-push-") as tmp:
            archive = Path(tmp) / "model.tar"
            pack_directory(Path(model_dir), archive)
            return self.push_archive(
                archive,
                name=name,
                aliases=aliases,
                parent=parent,
                labels=all_labels,
                metrics=metrics,
                create_model=create_model,
                description=description,
                lineage=lineage,
                derive_job=derive_job,
                derive_token=derive_token,
                force=force,
            )

    @_maps_rpc_errors
    def download(self, ref: str, dest: Path | str) -> pb.ModelVersion:
        """The stored archive of `ref` into file `dest`, sha256-verified (else ValueError)."""
        dest = Path(dest)
        stream = self.stub.DownloadVersion(
            pb.DownloadVersionRequest(ref=ref), timeout=max(self.timeout, 600.0)
        )
        header: pb.DownloadHeader | None = None
        digest = hashlib.sha256()
        partial = dest.with_name(dest.name + ".partial")
        with partial.open("wb") as f:
            for message in stream:
                if message.WhichOneof("part") == "header":
                    header = message.header
                else:
                    digest.update(message.chunk)
                    f.write(message.chunk)
        if header is None or digest.hexdigest() != header.sha256:
            partial.unlink(missing_ok=True)
            raise ValueError(f"download of '{ref}' does not match its sha256; try again")
        os.replace(partial, dest)
        return header.version

    @_maps_rpc_errors
    def pull(self, ref: str, model_dir: Path | str) -> pb.ModelVersion:
        """`ref` as a Triton model folder: `model_dir/config.pbtxt`, `model_dir/<N>/…`."""
        with tempfile.TemporaryDirectory(prefix="modelport-pull-") as tmp:
            archive = Path(tmp) / "model.tar"
            version = self.download(ref, archive)
            materialize(archive, Path(model_dir), version.version)
        return version

    @_maps_rpc_errors
    def get_version(self, ref: str) -> pb.ModelVersion:
        return self.stub.GetVersion(pb.GetVersionRequest(ref=ref), timeout=self.timeout)

    @_maps_rpc_errors
    def list_versions(self, model: str) -> list[pb.ModelVersion]:
        response = self.stub.ListVersions(pb.ListVersionsRequest(model=model), timeout=self.timeout)
        return list(response.versions)

    @_maps_rpc_errors
    def delete_version(self, model: str, version: int) -> None:
        request = pb.DeleteVersionRequest(model=model, version=version)
        self.stub.DeleteVersion(request, timeout=self.timeout)

    # -- aliases ----------------------------------------------------------------

    @_maps_rpc_errors
    def set_alias(self, model: str, version: int, alias: str, *, force: bool = False) -> pb.Alias:
        """Point `alias` at `version`; a version a derive gate rejected, or one whose
        signature differs from the alias's current version, needs `force`."""
        request = pb.SetAliasRequest(model=model, alias=alias, version=version, force=force)
        return self.stub.SetAlias(request, timeout=self.timeout)

    @_maps_rpc_errors
    def delete_alias(self, model: str, alias: str) -> None:
        self.stub.DeleteAlias(pb.DeleteAliasRequest(model=model, alias=alias), timeout=self.timeout)

    @_maps_rpc_errors
    def rollback(self, model: str, alias: str) -> pb.Alias:
        request = pb.RollbackAliasRequest(model=model, alias=alias)
        return self.stub.RollbackAlias(request, timeout=self.timeout)

    @_maps_rpc_errors
    def alias_history(self, model: str, alias: str = "") -> list[pb.AliasMove]:
        request = pb.ListAliasHistoryRequest(model=model, alias=alias)
        return list(self.stub.ListAliasHistory(request, timeout=self.timeout).moves)

    @_maps_rpc_errors
    def resolve(self, ref: str) -> pb.ResolveResponse:
        return self.stub.Resolve(pb.ResolveRequest(ref=ref), timeout=self.timeout)

    # -- policies -----------------------------------------------------------------

    @_maps_rpc_errors
    def set_policy(self, model: str, policy: pb.TrafficPolicy) -> pb.TrafficPolicy:
        request = pb.SetTrafficPolicyRequest(model=model, policy=policy)
        return self.stub.SetTrafficPolicy(request, timeout=self.timeout)

    @_maps_rpc_errors
    def get_policy(self, model: str) -> pb.TrafficPolicy:
        request = pb.GetTrafficPolicyRequest(model=model)
        return self.stub.GetTrafficPolicy(request, timeout=self.timeout)

    # -- pool placements --------------------------------------------------------------

    @_maps_rpc_errors
    def set_pool_placement(
        self, model: str, *, pooled: bool = True, priority: int = 0, memory_bytes: int = 0
    ) -> pb.PoolPlacement:
        """Serve `model` from the shared pool (or stop: `pooled=False`)."""
        placement = pb.PoolPlacement(
            model=model, pooled=pooled, priority=priority, memory_bytes=memory_bytes
        )
        request = pb.SetPoolPlacementRequest(placement=placement)
        return self.stub.SetPoolPlacement(request, timeout=self.timeout)

    @_maps_rpc_errors
    def get_pool_placement(self, model: str) -> pb.PoolPlacement:
        request = pb.GetPoolPlacementRequest(model=model)
        return self.stub.GetPoolPlacement(request, timeout=self.timeout)

    @_maps_rpc_errors
    def list_pool_placements(self) -> list[pb.PoolPlacement]:
        request = pb.ListPoolPlacementsRequest()
        return list(self.stub.ListPoolPlacements(request, timeout=self.timeout).placements)

    def watch(
        self, after_revision: int = 0, models: Iterable[str] = (), timeout: float | None = None
    ) -> Iterator[pb.WatchEvent]:
        """Change events after `after_revision`, then live ones; `close()` the iterator to stop."""
        request = pb.WatchRequest(after_revision=after_revision, models=list(models))
        stream = self.stub.Watch(request, timeout=timeout)
        try:
            yield from stream
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                raise ModelportClientError.from_rpc_error(exc) from None
        finally:
            stream.cancel()


def ensure_pushed(
    registry_addr: str, model_dir: Path | str, name: str, alias: str = "production"
) -> pb.ModelVersion:
    """Push `model_dir` as `name` and point `alias` at it, unless that alias already holds it.

    "Holds it" means the alias's version was pushed from a folder with the same
    files (the `modelport.source-digest` label), so calling this at every
    start pushes once.
    """
    digest = directory_digest(model_dir)
    with RegistryClient(registry_addr) as registry:
        try:
            current = registry.get_version(f"{name}@{alias}")
            if current.labels.get(SOURCE_DIGEST_LABEL) == digest:
                return current
        except ModelportClientError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
        for version in reversed(_versions_or_empty(registry, name)):
            if version.labels.get(SOURCE_DIGEST_LABEL) == digest:
                registry.set_alias(name, version.version, alias)
                return registry.get_version(f"{name}:{version.version}")
        return registry.push(model_dir, name=name, aliases=[alias])


def _versions_or_empty(registry: RegistryClient, name: str) -> list[pb.ModelVersion]:
    try:
        return registry.list_versions(name)
    except ModelportClientError as exc:
        if exc.code == grpc.StatusCode.NOT_FOUND:
            return []
        raise
