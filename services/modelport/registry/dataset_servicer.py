"""`modelport.registry.v1.DatasetRegistry` over the transport-free `DatasetStore`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc

from modelport.artifacts.datasets import DatasetFormat
from modelport.errors import Cancelled, InvalidInput
from modelport.proto.modelport.registry.v1 import datasets_pb2 as pb
from modelport.proto.modelport.registry.v1 import datasets_pb2_grpc
from modelport.registry.convert import timestamp
from modelport.registry.datasets import DatasetInfo, DatasetStore, NewDataset

log = logging.getLogger(__name__)

DEFAULT_CHUNK_BYTES = 1 << 20
MAX_CHUNK_BYTES = 4 << 20
_FORMATS = {
    DatasetFormat.COMPLETION: pb.COMPLETION,
    DatasetFormat.CHAT: pb.CHAT,
    DatasetFormat.TENSORS: pb.TENSORS,
}


def dataset_msg(info: DatasetInfo) -> pb.Dataset:
    return pb.Dataset(
        name=info.name,
        sha256=info.sha256,
        size_bytes=info.size_bytes,
        format=_FORMATS[info.format],
        examples=info.examples,
        train_examples=info.examples - info.validation_examples,
        validation_examples=info.validation_examples,
        validation_fraction=info.validation_fraction,
        stats=info.stats,
        created_at=timestamp(info.created_at),
        labels=info.labels,
        file_name=info.file_name,
    )


Context = grpc.aio.ServicerContext


class DatasetServicer(datasets_pb2_grpc.DatasetRegistryServicer):
    def __init__(self, store: DatasetStore) -> None:
        self.store = store

    async def UploadDataset(
        self, request_iterator: AsyncIterator[pb.UploadDatasetRequest], context: Context
    ) -> pb.Dataset:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidInput("dataset upload must start with a header message")
        header = first.header
        new = NewDataset(
            name=header.name,
            file_name=header.file_name,
            validation_fraction=header.validation_fraction,
            labels=dict(header.labels),
        )
        if len(header.sha256) != 64:
            # A cancelled stream ends like a complete one; only the digest tells them apart.
            raise InvalidInput(f"dataset '{new.name}': upload header needs the sha256 (hex)")
        await asyncio.to_thread(self.store.check_upload, new)
        sink = self.store.open_upload()
        try:
            async for message in request_iterator:
                if message.WhichOneof("part") != "chunk":
                    raise InvalidInput(f"dataset '{new.name}': upload sent a second header")
                sink.write(message.chunk)
            if context.cancelled():
                raise Cancelled(f"dataset '{new.name}': upload cancelled by the client")
        except BaseException:
            sink.discard()
            raise
        # Shielded, as version uploads: once started it stores or cleans up.
        finishing = asyncio.get_running_loop().run_in_executor(
            None, self.store.finish_upload, sink, new, header.sha256
        )
        info = await asyncio.shield(finishing)
        log.info("stored dataset %s (%d examples)", info.ref, info.examples)
        return dataset_msg(info)

    async def GetDataset(self, request: pb.GetDatasetRequest, context: Context) -> pb.Dataset:
        return dataset_msg(await asyncio.to_thread(self.store.get, request.ref))

    async def ListDatasets(
        self, request: pb.ListDatasetsRequest, context: Context
    ) -> pb.ListDatasetsResponse:
        infos = await asyncio.to_thread(self.store.list, request.name)
        return pb.ListDatasetsResponse(datasets=[dataset_msg(i) for i in infos])

    async def DownloadDataset(
        self, request: pb.DownloadDatasetRequest, context: Context
    ) -> AsyncIterator[pb.DownloadDatasetResponse]:
        chunk_bytes = min(request.chunk_bytes or DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES)
        info, chunks = await asyncio.to_thread(self.store.open_download, request.ref, chunk_bytes)
        yield pb.DownloadDatasetResponse(header=dataset_msg(info))
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            yield pb.DownloadDatasetResponse(chunk=chunk)


def register(server: grpc.aio.Server, servicer: DatasetServicer) -> None:
    datasets_pb2_grpc.add_DatasetRegistryServicer_to_server(servicer, server)


SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DatasetRegistry"].full_name
