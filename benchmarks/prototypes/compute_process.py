"""Prototype, a measurement and not the product: the model in its own process.

    python benchmarks/prototypes/compute_process.py REPO MODEL [--threads 1] [--typed]

One grpc.aio process does the transport: raw-bytes ModelInfer handler, the
request parsed by upb, inputs as numpy views, a work-conserving batcher (a
batch leaves as soon as the compute process is idle, or waits up to the
config's queue delay for more rows), rows copied once into a shared-memory
slot, and the answer encoded by hand (a prebuilt prefix per batch size plus
the output bytes). A compute process, with its own GIL, runs the exported
program on the slot and writes the outputs beside it; the two exchange 8-byte
messages over a socketpair watched by the event loop.

What it answers is what modelport answers for single-input/single-output FP32
models (enough for `mlp` and `encoder`), without modelport's checks,
statistics, tracing or error mapping: the question it answers is how close to
the bare server that split can get. Prints its port, then serves.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import struct
import sys
import time
from collections import deque
from math import prod
from multiprocessing import get_context, shared_memory
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bare_server import Bare, read_configs
from modelport.proto.inference import grpc_service_pb2 as pb

SLOT = struct.Struct("<II")  # slot index, rows


def _slot_views(
    buf: memoryview, max_rows: int, row: tuple[int, ...], out_row: tuple[int, ...], slots: int
):  # type: ignore[no-untyped-def]
    in_size, out_size = max_rows * prod(row) * 4, max_rows * prod(out_row) * 4
    views = []
    for s in range(slots):
        base = s * (in_size + out_size)
        x = np.ndarray((max_rows, *row), np.float32, buffer=buf, offset=base)
        y = np.ndarray((max_rows, *out_row), np.float32, buffer=buf, offset=base + in_size)
        views.append((x, y))
    return views


def compute_main(
    path: str,
    shm_name: str,
    channel: socket.socket,
    max_rows: int,
    row: tuple[int, ...],
    out_row: tuple[int, ...],
    slots: int,
    threads: int,
) -> None:
    import torch

    torch.set_num_threads(threads)
    module = torch.export.load(path).module()
    shm = shared_memory.SharedMemory(shm_name)
    views = _slot_views(shm.buf, max_rows, row, out_row, slots)
    with torch.inference_mode():
        module(torch.zeros(1, *row))
        channel.send(b"ready...")
        while message := channel.recv(SLOT.size):
            slot, rows = SLOT.unpack(message)
            x, y = views[slot]
            y[:rows] = module(torch.from_numpy(x[:rows])).numpy()
            channel.send(message)


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class Encoder:
    """ModelInferResponse bytes: a prebuilt prefix per rows, then id and raw output."""

    def __init__(self, model: str, output: str, out_row: tuple[int, ...]) -> None:
        self.model, self.output, self.out_row = model, output, out_row
        self.prefixes: dict[int, bytes] = {}

    def encode(self, request_id: str, data: bytes, rows: int) -> bytes:
        prefix = self.prefixes.get(rows)
        if prefix is None:
            message = pb.ModelInferResponse(model_name=self.model, model_version="1")
            message.outputs.add(name=self.output, datatype="FP32", shape=[rows, *self.out_row])
            prefix = self.prefixes[rows] = message.SerializeToString()
        ident = b"\x1a" + varint(len(request_id)) + request_id.encode() if request_id else b""
        return prefix + ident + b"\x32" + varint(len(data)) + data


class Batcher:
    def __init__(self, channel: socket.socket, views: list, max_rows: int, delay_s: float) -> None:  # type: ignore[type-arg]
        self.loop = asyncio.get_running_loop()
        self.channel, self.views, self.max_rows, self.delay = channel, views, max_rows, delay_s
        self.queue: deque[tuple[np.ndarray, asyncio.Future[tuple[bytes, int]], float]] = deque()
        self.rows = 0
        self.free = list(range(len(views)))
        self.running: dict[int, list[tuple[int, int, asyncio.Future[tuple[bytes, int]]]]] = {}
        self.timer: asyncio.TimerHandle | None = None
        channel.setblocking(False)
        self.loop.add_reader(channel.fileno(), self._replies)

    def submit(self, x: np.ndarray) -> asyncio.Future[tuple[bytes, int]]:
        future = self.loop.create_future()
        self.queue.append((x, future, time.monotonic()))
        self.rows += x.shape[0]
        self._dispatch()
        return future

    def _dispatch(self) -> None:
        # One batch at a time per compute process; requests queue while it runs.
        while self.queue and self.free and not self.running:
            wait = self.queue[0][2] + self.delay - time.monotonic()
            if self.rows < self.max_rows and wait > 0.001:
                if self.timer is None:
                    self.timer = self.loop.call_later(wait, self._on_timer)
                return
            slot = self.free.pop()
            x_slot, _ = self.views[slot]
            taken, rows = [], 0
            while self.queue and rows + self.queue[0][0].shape[0] <= self.max_rows:
                x, future, _ = self.queue.popleft()
                n = x.shape[0]
                x_slot[rows : rows + n] = x
                taken.append((rows, n, future))
                rows += n
            self.rows -= rows
            self.running[slot] = taken
            self.channel.send(SLOT.pack(slot, rows))

    def _on_timer(self) -> None:
        self.timer = None
        self._dispatch()

    def _replies(self) -> None:
        data = self.channel.recv(SLOT.size * 16)
        for i in range(0, len(data), SLOT.size):
            slot, _ = SLOT.unpack_from(data, i)
            _, y_slot = self.views[slot]
            for start, n, future in self.running.pop(slot):
                if not future.done():
                    future.set_result((y_slot[start : start + n].tobytes(), n))
            self.free.append(slot)
        self._dispatch()


async def serve(repo: Path, model: str, threads: int, slots: int) -> None:
    configs = read_configs(repo)
    config = configs[model]
    row = tuple(int(d) for d in config.input[0].dims)
    out_row = tuple(int(d) for d in config.output[0].dims)
    max_rows = config.max_batch_size
    delay = config.dynamic_batching.max_queue_delay_microseconds / 1e6
    size = slots * max_rows * (prod(row) + prod(out_row)) * 4
    shm = shared_memory.SharedMemory(create=True, size=size)
    ours, theirs = socket.socketpair()
    process = get_context("spawn").Process(
        target=compute_main,
        args=(
            str(repo / model / "1" / "model.pt2"),
            shm.name,
            theirs,
            max_rows,
            row,
            out_row,
            slots,
            threads,
        ),
        daemon=True,
    )
    process.start()
    assert ours.recv(8) == b"ready..."
    batcher = Batcher(ours, _slot_views(shm.buf, max_rows, row, out_row, slots), max_rows, delay)
    encoder = Encoder(model, config.output[0].name, out_row)
    parse = pb.ModelInferRequest.FromString

    async def infer(data: bytes, context: object) -> bytes:
        request = parse(data)
        tensor = request.inputs[0]
        x = np.frombuffer(request.raw_input_contents[0], np.float32).reshape(tuple(tensor.shape))
        out, rows = await batcher.submit(x)
        return encoder.encode(request.id, out, rows)

    bare = Bare(configs)  # metadata and config answers, for perf_analyzer
    handlers = {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)}
    for name, kind in (
        ("ModelConfig", pb.ModelConfigRequest),
        ("ModelMetadata", pb.ModelMetadataRequest),
        ("ModelReady", pb.ModelReadyRequest),
        ("ServerReady", pb.ServerReadyRequest),
        ("ServerMetadata", pb.ServerMetadataRequest),
    ):
        handlers[name] = grpc.unary_unary_rpc_method_handler(
            getattr(bare, name),
            request_deserializer=kind.FromString,
            response_serializer=lambda m: m.SerializeToString(),
        )
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("inference.GRPCInferenceService", handlers),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    try:
        await server.wait_for_termination()
    finally:
        shm.close()
        shm.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("repo", type=Path)
    parser.add_argument("model")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads in the compute process"
    )
    parser.add_argument("--slots", type=int, default=2)
    args = parser.parse_args()
    import uvloop

    uvloop.install()
    asyncio.run(serve(args.repo, args.model, args.threads, args.slots))


if __name__ == "__main__":
    main()
