"""Callers' SDK for the inference protocol: numpy in, numpy out, sync or asyncio.

Works against the router or an inference service (and any OIP v2 / Triton gRPC
server). Every failed call raises `ModelportClientError` with the gRPC code.

    with InferenceClient("localhost:8001") as client:
        out = client.infer("simple", {"INPUT0": a, "INPUT1": b})
        out["OUTPUT0"]
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any

import grpc
import numpy as np

from modelport.client.channel import ModelportClientError, TlsOptions, aio_channel, sync_channel
from modelport.client.codec import build_request, decode_response
from modelport.client.generation import GenerationChunk, generation_request, read_chunk
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc

Inputs = Mapping[str, np.ndarray]
Metadata = Sequence[tuple[str, str]]


class _Default:
    """Marks "use the client's timeout" (None already means "no deadline")."""


DEFAULT = _Default()


def _stream_result(response: pb.ModelStreamInferResponse) -> dict[str, np.ndarray]:
    if response.error_message:
        raise ModelportClientError(None, response.error_message)
    return decode_response(response.infer_response)


def _generation_chunk(response: pb.ModelStreamInferResponse) -> GenerationChunk:
    if response.error_message:
        params = response.infer_response.parameters
        name = params["error_code"].string_param if "error_code" in params else ""
        code = getattr(grpc.StatusCode, name, None) if name else None
        raise ModelportClientError(code, response.error_message)
    return read_chunk(response.infer_response)


def _load_request(model: str, config_json: str) -> pb.RepositoryModelLoadRequest:
    request = pb.RepositoryModelLoadRequest(model_name=model)
    if config_json:
        # Triton's convention: a "config" parameter overrides the repository's config.
        request.parameters["config"].string_param = config_json
    return request


class InferenceClient:
    """Blocking client. `timeout` is seconds per call (None: no deadline); `api_key`
    (an API key or a bearer JWT) is sent as `authorization: Bearer …` on every call."""

    def __init__(
        self,
        url: str,
        *,
        tls: TlsOptions | None = None,
        api_key: str | None = None,
        timeout: float | None = 60.0,
        max_message_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._channel = sync_channel(url, tls, api_key, max_message_bytes=max_message_bytes)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self.timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self,
        method: str,
        request: Any,
        metadata: Metadata | None = None,
        timeout: float | _Default | None = DEFAULT,
    ) -> Any:
        deadline = self.timeout if isinstance(timeout, _Default) else timeout
        try:
            return getattr(self._stub, method)(request, timeout=deadline, metadata=metadata)
        except grpc.RpcError as error:
            raise ModelportClientError.from_rpc_error(error) from None

    def is_server_live(self) -> bool:
        return bool(self._call("ServerLive", pb.ServerLiveRequest()).live)

    def is_server_ready(self) -> bool:
        return bool(self._call("ServerReady", pb.ServerReadyRequest()).ready)

    def is_model_ready(self, model: str, version: str = "") -> bool:
        request = pb.ModelReadyRequest(name=model, version=version)
        return bool(self._call("ModelReady", request).ready)

    def server_metadata(self) -> pb.ServerMetadataResponse:
        return self._call("ServerMetadata", pb.ServerMetadataRequest())

    def model_metadata(self, model: str, version: str = "") -> pb.ModelMetadataResponse:
        return self._call("ModelMetadata", pb.ModelMetadataRequest(name=model, version=version))

    def model_config(self, model: str, version: str = "") -> Any:
        request = pb.ModelConfigRequest(name=model, version=version)
        return self._call("ModelConfig", request).config

    def model_statistics(self, model: str = "", version: str = "") -> pb.ModelStatisticsResponse:
        request = pb.ModelStatisticsRequest(name=model, version=version)
        return self._call("ModelStatistics", request)

    def repository_index(self, ready_only: bool = False) -> list[Any]:
        request = pb.RepositoryIndexRequest(ready=ready_only)
        return list(self._call("RepositoryIndex", request).models)

    def load_model(self, model: str, config_json: str = "") -> None:
        self._call("RepositoryModelLoad", _load_request(model, config_json))

    def unload_model(self, model: str) -> None:
        self._call("RepositoryModelUnload", pb.RepositoryModelUnloadRequest(model_name=model))

    def infer(
        self,
        model: str,
        inputs: Inputs,
        *,
        version: str = "",
        outputs: Sequence[str] | None = None,
        datatypes: Mapping[str, str] | None = None,
        metadata: Metadata | None = None,
        timeout: float | _Default | None = DEFAULT,
    ) -> dict[str, np.ndarray]:
        """Run `model` on numpy `inputs`; returns its outputs by name.

        `outputs` limits which come back; `datatypes` names a datatype numpy lacks
        (`{"X": "BF16"}`); `timeout` overrides the client's deadline for this call.
        """
        request = build_request(
            model, inputs, version=version, outputs=outputs, datatypes=datatypes
        )
        return decode_response(self._call("ModelInfer", request, metadata, timeout))

    def stream_infer(
        self,
        model: str,
        inputs: Iterable[Inputs],
        *,
        version: str = "",
        outputs: Sequence[str] | None = None,
        datatypes: Mapping[str, str] | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """One bidirectional stream; yields each request's outputs in order."""
        counter = itertools.count()
        requests = (
            build_request(
                model,
                item,
                version=version,
                outputs=outputs,
                datatypes=datatypes,
                request_id=str(next(counter)),
            )
            for item in inputs
        )
        try:
            for response in self._stub.ModelStreamInfer(requests, timeout=self.timeout):
                yield _stream_result(response)
        except grpc.RpcError as error:
            raise ModelportClientError.from_rpc_error(error) from None

    def generate(
        self, model: str, prompt: str | list[int], *, version: str = "", **sampling: Any
    ) -> Iterator[GenerationChunk]:
        """Stream a completion of `prompt` (text or token ids) from a generative model.

        `sampling`: max_tokens, temperature, top_p, top_k, seed, stop, … (vLLM's keys).
        Leaving the loop early cancels the call: the model frees the sequence's slot.
        """
        call = self._stub.ModelStreamInfer(
            iter([generation_request(model, prompt, sampling, version=version)]),
            timeout=self.timeout,
        )
        try:
            yield from map(_generation_chunk, call)  # the call ends after the final chunk
        except grpc.RpcError as error:
            raise ModelportClientError.from_rpc_error(error) from None
        finally:
            call.cancel()


class AsyncInferenceClient:
    """asyncio client (grpc.aio); the same methods as `InferenceClient`, awaited."""

    def __init__(
        self,
        url: str,
        *,
        tls: TlsOptions | None = None,
        api_key: str | None = None,
        timeout: float | None = 60.0,
        max_message_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._channel = aio_channel(url, tls, api_key, max_message_bytes=max_message_bytes)
        self._stub: pb_grpc.GRPCInferenceServiceAsyncStub = pb_grpc.GRPCInferenceServiceStub(
            self._channel
        )  # type: ignore[assignment]
        self.timeout = timeout

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncInferenceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(
        self,
        method: str,
        request: Any,
        metadata: Metadata | None = None,
        timeout: float | _Default | None = DEFAULT,
    ) -> Any:
        deadline = self.timeout if isinstance(timeout, _Default) else timeout
        try:
            return await getattr(self._stub, method)(request, timeout=deadline, metadata=metadata)
        except grpc.RpcError as error:
            raise ModelportClientError.from_rpc_error(error) from None

    async def is_server_live(self) -> bool:
        return bool((await self._call("ServerLive", pb.ServerLiveRequest())).live)

    async def is_server_ready(self) -> bool:
        return bool((await self._call("ServerReady", pb.ServerReadyRequest())).ready)

    async def is_model_ready(self, model: str, version: str = "") -> bool:
        request = pb.ModelReadyRequest(name=model, version=version)
        return bool((await self._call("ModelReady", request)).ready)

    async def server_metadata(self) -> pb.ServerMetadataResponse:
        return await self._call("ServerMetadata", pb.ServerMetadataRequest())

    async def model_metadata(self, model: str, version: str = "") -> pb.ModelMetadataResponse:
        request = pb.ModelMetadataRequest(name=model, version=version)
        return await self._call("ModelMetadata", request)

    async def model_config(self, model: str, version: str = "") -> Any:
        request = pb.ModelConfigRequest(name=model, version=version)
        return (await self._call("ModelConfig", request)).config

    async def model_statistics(
        self, model: str = "", version: str = ""
    ) -> pb.ModelStatisticsResponse:
        request = pb.ModelStatisticsRequest(name=model, version=version)
        return await self._call("ModelStatistics", request)

    async def repository_index(self, ready_only: bool = False) -> list[Any]:
        request = pb.RepositoryIndexRequest(ready=ready_only)
        return list((await self._call("RepositoryIndex", request)).models)

    async def load_model(self, model: str, config_json: str = "") -> None:
        await self._call("RepositoryModelLoad", _load_request(model, config_json))

    async def unload_model(self, model: str) -> None:
        request = pb.RepositoryModelUnloadRequest(model_name=model)
        await self._call("RepositoryModelUnload", request)

    async def infer(
        self,
        model: str,
        inputs: Inputs,
        *,
        version: str = "",
        outputs: Sequence[str] | None = None,
        datatypes: Mapping[str, str] | None = None,
        metadata: Metadata | None = None,
        timeout: float | _Default | None = DEFAULT,
    ) -> dict[str, np.ndarray]:
        """Run `model` on numpy `inputs`; returns its outputs by name.

        `outputs` limits which come back; `datatypes` names a datatype numpy lacks
        (`{"X": "BF16"}`); `timeout` overrides the client's deadline for this call.
        """
        request = build_request(
            model, inputs, version=version, outputs=outputs, datatypes=datatypes
        )
        return decode_response(await self._call("ModelInfer", request, metadata, timeout))

    async def stream_infer(
        self,
        model: str,
        inputs: AsyncIterable[Inputs] | Iterable[Inputs],
        *,
        version: str = "",
        outputs: Sequence[str] | None = None,
        datatypes: Mapping[str, str] | None = None,
    ) -> AsyncIterator[dict[str, np.ndarray]]:
        """One bidirectional stream; yields each request's outputs in order."""

        async def requests() -> AsyncIterator[pb.ModelInferRequest]:
            index = 0
            if isinstance(inputs, AsyncIterable):
                async for item in inputs:
                    yield build_request(
                        model,
                        item,
                        version=version,
                        outputs=outputs,
                        datatypes=datatypes,
                        request_id=str(index),
                    )
                    index += 1
            else:
                for item in inputs:
                    yield build_request(
                        model,
                        item,
                        version=version,
                        outputs=outputs,
                        datatypes=datatypes,
                        request_id=str(index),
                    )
                    index += 1

        call = self._stub.ModelStreamInfer(requests(), timeout=self.timeout)
        try:
            async for response in call:
                yield _stream_result(response)
        except grpc.RpcError as error:
            raise ModelportClientError.from_rpc_error(error) from None

    async def generate(
        self, model: str, prompt: str | list[int], *, version: str = "", **sampling: Any
    ) -> AsyncIterator[GenerationChunk]:
        """`InferenceClient.generate`, awaited: closing the iterator cancels the call."""
        request = generation_request(model, prompt, sampling, version=version)
        call = self._stub.ModelStreamInfer(iter([request]), timeout=self.timeout)
        try:
            async for response in call:  # it ends after the final chunk
                yield _generation_chunk(response)
        except grpc.RpcError as error:
            raise ModelportClientError.from_rpc_error(error) from None
        finally:
            call.cancel()
