"""Synchronous Python API for the registry's datasets (`modelport datasets …` uses it).

with DatasetClient("localhost:8003") as datasets:
    dataset = datasets.push("train.jsonl", name="support-chats")
    print(dataset.examples, dataset.validation_examples, dataset.sha256)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import grpc

from modelport.artifacts.hashing import sha256_of
from modelport.client.channel import ModelportClientError
from modelport.client.registry import CHUNK_BYTES, default_address
from modelport.proto.modelport.registry.v1 import datasets_pb2 as pb
from modelport.proto.modelport.registry.v1 import datasets_pb2_grpc


class DatasetClient:
    def __init__(self, address: str = "", *, timeout: float = 30.0) -> None:
        self.address = address or default_address()
        self.timeout = timeout
        self._channel = grpc.insecure_channel(self.address)
        self.stub = datasets_pb2_grpc.DatasetRegistryStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> DatasetClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def push(
        self,
        path: Path | str,
        *,
        name: str,
        validation_fraction: float = 0.0,
        labels: Mapping[str, str] | None = None,
    ) -> pb.Dataset:
        """Upload a JSONL or .npz file; checked on arrival (INVALID_ARGUMENT names the line)."""
        path = Path(path)
        header = pb.DatasetUploadHeader(
            name=name,
            sha256=sha256_of(path),
            file_name=path.name,
            validation_fraction=validation_fraction,
            labels=labels or {},
        )

        def messages() -> Iterator[pb.UploadDatasetRequest]:
            yield pb.UploadDatasetRequest(header=header)
            with path.open("rb") as f:
                while block := f.read(CHUNK_BYTES):
                    yield pb.UploadDatasetRequest(chunk=block)

        try:
            return self.stub.UploadDataset(messages(), timeout=max(self.timeout, 600.0))
        except grpc.RpcError as exc:
            raise ModelportClientError.from_rpc_error(exc) from None

    def get(self, ref: str) -> pb.Dataset:
        try:
            return self.stub.GetDataset(pb.GetDatasetRequest(ref=ref), timeout=self.timeout)
        except grpc.RpcError as exc:
            raise ModelportClientError.from_rpc_error(exc) from None

    def list(self, name: str = "") -> list[pb.Dataset]:
        try:
            response = self.stub.ListDatasets(
                pb.ListDatasetsRequest(name=name), timeout=self.timeout
            )
        except grpc.RpcError as exc:
            raise ModelportClientError.from_rpc_error(exc) from None
        return list(response.datasets)

    def download(self, ref: str, dest: Path | str) -> pb.Dataset:
        """The stored file into `dest`, sha256-verified (else ValueError)."""
        dest = Path(dest)
        partial = dest.with_name(dest.name + ".partial")
        digest = hashlib.sha256()
        header: pb.Dataset | None = None
        try:
            stream = self.stub.DownloadDataset(
                pb.DownloadDatasetRequest(ref=ref), timeout=max(self.timeout, 600.0)
            )
            with partial.open("wb") as f:
                for message in stream:
                    if message.WhichOneof("part") == "header":
                        header = message.header
                    else:
                        digest.update(message.chunk)
                        f.write(message.chunk)
        except grpc.RpcError as exc:
            partial.unlink(missing_ok=True)
            raise ModelportClientError.from_rpc_error(exc) from None
        if header is None or digest.hexdigest() != header.sha256:
            partial.unlink(missing_ok=True)
            raise ValueError(f"download of dataset '{ref}' does not match its sha256; try again")
        os.replace(partial, dest)
        return header
