"""System shared memory through the router: a region registered here is registered on
every replica behind it, and on each replica that joins later.

A request naming a region is then forwarded as any other: whichever replica takes it
reads its inputs from, and writes its outputs into, the caller's region. This only
works where the caller, the router and the replicas share a host (`modelport up`, one
pod); a replica elsewhere cannot open the region, so the registration fails with that
replica's answer and is undone on the others.

Transport-free: calls go through the fleet's `ControlTransport`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from modelport import errors
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.router.replicas import Replica, ReplicaTable

log = logging.getLogger(__name__)

Register = pb.SystemSharedMemoryRegisterRequest


class SharedMemoryRegions:
    def __init__(self, table: ReplicaTable, transport: Any) -> None:
        self._table = table
        self._transport = transport  # a fleet.ControlTransport
        self._regions: dict[str, Register] = {}
        self._lock = asyncio.Lock()  # one change at a time, joins included
        self._replaying: set[asyncio.Task[None]] = set()

    def _replicas(self) -> list[Replica]:
        return [r for r in self._table.replicas.values() if r.handle is not None]

    async def register(self, request: Register) -> pb.SystemSharedMemoryRegisterResponse:
        async with self._lock:
            if request.name in self._regions:
                raise errors.AlreadyExists(
                    f"shared memory region '{request.name}' already in manager"
                )
            replicas = self._replicas()
            if not replicas:
                raise errors.Unavailable(
                    f"no replica to register shared memory region '{request.name}' on"
                )
            answers = await self._on_all(replicas, "SystemSharedMemoryRegister", request)
            failed = [a for a in answers if isinstance(a, BaseException)]
            if failed:
                took = [r for r, a in zip(replicas, answers, strict=True)
                        if not isinstance(a, BaseException)]  # fmt: skip
                undo = pb.SystemSharedMemoryUnregisterRequest(name=request.name)
                await self._on_all(took, "SystemSharedMemoryUnregister", undo)
                raise failed[0]
            copy = Register()
            copy.CopyFrom(request)
            self._regions[request.name] = copy
        return pb.SystemSharedMemoryRegisterResponse()

    async def unregister(
        self, request: pb.SystemSharedMemoryUnregisterRequest
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        """One region, or all when the name is empty; unknown names are a no-op, as on a
        replica."""
        async with self._lock:
            if request.name:
                self._regions.pop(request.name, None)
            else:
                self._regions.clear()
            answers = await self._on_all(self._replicas(), "SystemSharedMemoryUnregister", request)
        failed = [a for a in answers if isinstance(a, BaseException)]
        if failed:
            raise failed[0]
        return pb.SystemSharedMemoryUnregisterResponse()

    def status(
        self, request: pb.SystemSharedMemoryStatusRequest
    ) -> pb.SystemSharedMemoryStatusResponse:
        """The regions registered through this router."""
        if request.name and request.name not in self._regions:
            raise errors.NotFound(f"Unable to find system shared memory region: '{request.name}'")
        names = [request.name] if request.name else sorted(self._regions)
        response = pb.SystemSharedMemoryStatusResponse()
        for name in names:
            region = self._regions[name]
            response.regions[name].CopyFrom(
                pb.SystemSharedMemoryStatusResponse.RegionStatus(
                    name=name, key=region.key, offset=region.offset, byte_size=region.byte_size
                )
            )
        return response

    def joined(self, replica: Replica) -> None:
        """A replica joined: it gets every region registered so far."""
        if not self._regions:
            return
        task = asyncio.get_running_loop().create_task(self._replay(replica))
        self._replaying.add(task)
        task.add_done_callback(self._replaying.discard)

    async def _replay(self, replica: Replica) -> None:
        async with self._lock:
            for region in list(self._regions.values()):
                try:
                    await self._transport.call(replica, "SystemSharedMemoryRegister", region)
                except errors.AlreadyExists:
                    pass
                except errors.ModelportError as exc:
                    log.warning(
                        "replica %s could not register shared memory region '%s': %s",
                        replica.address, region.name, exc,
                    )  # fmt: skip

    async def _on_all(self, replicas: list[Replica], method: str, request: Any) -> list[Any]:
        return list(
            await asyncio.gather(
                *(self._transport.call(r, method, request) for r in replicas),
                return_exceptions=True,
            )
        )


def cuda_status(request: pb.CudaSharedMemoryStatusRequest) -> pb.CudaSharedMemoryStatusResponse:
    """CUDA regions are never held (as on a replica): none listed, a named one unknown."""
    if request.name:
        raise errors.NotFound(f"Unable to find cuda shared memory region: '{request.name}'")
    return pb.CudaSharedMemoryStatusResponse()


def cuda_register(request: pb.CudaSharedMemoryRegisterRequest) -> None:
    raise errors.Unavailable(
        f"failed to register CUDA shared memory region '{request.name}': modelport does not "
        "map CUDA IPC handles; pass tensors through system shared memory or in the request"
    )
