"""Models in compute processes: the same answers as in-process, through real children.

The wire format is checked on its own (BYTES, inline overflow, descriptors);
the backend against the in-process torch backend on the samples; and the
failure paths with real processes: a model that cannot load, a child killed
in the middle of serving, and versions retired by unload and hot swap leave no
process behind. Batches in flight (one running, one staged) are driven under
uvloop, the server's loop, whose watch makes the channel non-blocking.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvloop
from modelport.artifacts.config import build_spec, read_config
from modelport.artifacts.torch_backend import load_backend
from modelport.errors import Internal, InvalidInput
from modelport.inference import compute_wire as wire
from modelport.inference.compute import ProcessBackend
from modelport.proto.inference import grpc_service_pb2 as pb

RNG = np.random.default_rng(0)


def spec_of(repo: Path, name: str) -> Any:
    return build_spec(name, read_config(repo / name))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is not alive
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_wire_places_in_the_segment_what_fits_and_sends_the_rest_inline() -> None:
    segment = wire.Segment(4096)
    floats = RNG.standard_normal((4, 100)).astype(np.float32)  # 1600 bytes
    words = np.array([[b"hello", b""], [b"\xff\x00", b"x" * 70]], dtype=np.object_)
    big = np.arange(1000, dtype=np.int64)  # 8000 bytes: inline
    placement = wire.place([floats, words, big], 0, segment.size)
    placement.write(segment.buffer)
    assert [d[3] >= 0 for d in placement.described] == [True, True, False]
    inline = [bytearray(data) for data in placement.inline]
    back = wire.read(segment.buffer, placement.described, inline, copy=True)
    np.testing.assert_array_equal(back[0], floats)
    assert back[1].tolist() == words.tolist() and back[1].dtype == np.object_
    np.testing.assert_array_equal(back[2], big)
    assert wire.needed([floats, words, big]) > segment.size
    segment.close()


def test_frames_carry_a_segment_descriptor_to_the_peer() -> None:
    ours, theirs = socket.socketpair()
    segment = wire.Segment(1 << 16)
    segment.buffer[:5] = b"hello"
    wire.send_frame(ours, {"segment": segment.size}, [b"tail"], segment=segment)
    header, fd = wire.recv_frame(theirs)
    assert header == {"segment": 1 << 16} and fd is not None
    mapped = wire.Segment(header["segment"], fd)
    assert bytes(mapped.buffer[:5]) == b"hello"
    assert bytes(wire.recv_inline(theirs, 4)) == b"tail"
    ours.close()
    with pytest.raises(wire.PeerGone):
        wire.recv_frame(theirs)
    mapped.close()
    segment.close()
    theirs.close()


def test_process_backend_answers_as_the_in_process_backend(sample_repo: Path) -> None:
    spec = spec_of(sample_repo, "mlp")
    here = load_backend(spec, sample_repo / "mlp" / "1")
    backend = ProcessBackend(spec, sample_repo / "mlp" / "1", instances=1, threads=1)
    try:
        for rows in (1, 7, 1000):  # 1000 rows outgrow the first segment
            x = RNG.standard_normal((rows, 256)).astype(np.float32)
            (expected,) = here.run([x])
            (answer,) = backend.run([x])
            # Another thread count sums in another order: equal to float rounding.
            np.testing.assert_allclose(answer, expected, rtol=1e-5, atol=1e-6)
        simple = spec_of(sample_repo, "simple")
        two = ProcessBackend(simple, sample_repo / "simple" / "1", instances=2, threads=1)
        a = np.arange(16, dtype=np.int32).reshape(1, 16)
        total, difference = two.run([a, a + 1])
        np.testing.assert_array_equal(total, 2 * a + 1)
        np.testing.assert_array_equal(difference, np.full((1, 16), -1, np.int32))
        assert len({p.pid for p in two.processes}) == 2
        two.close()
        assert not any(alive(p.pid) for p in two.processes)
    finally:
        backend.close()


def test_two_batches_in_flight_each_get_their_answer_in_parts_on_a_non_blocking_channel(
    sample_repo: Path,
) -> None:
    spec = spec_of(sample_repo, "simple")
    backend = ProcessBackend(spec, sample_repo / "simple" / "1", instances=1, threads=1)
    process = backend.processes[0]
    small = np.arange(16, dtype=np.int32).reshape(1, 16)
    # 1 MB of inputs fills a slot's first segment: the 1 MB of outputs comes inline,
    # more than a socket buffer holds, so it is read in parts as it arrives.
    big = RNG.integers(-1000, 1000, (8192, 16), dtype=np.int32)

    async def drive() -> None:
        await asyncio.gather(*(backend.run_async([small, small]) for _ in range(2)))
        first = asyncio.ensure_future(backend.run_async([small, small]))
        second = asyncio.ensure_future(backend.run_async([big, big + 1]))
        await asyncio.sleep(0)
        assert process.outstanding == 2  # the second was sent while the first ran
        (total, _), (big_total, big_difference) = [
            c.outputs for c in await asyncio.gather(first, second)
        ]
        np.testing.assert_array_equal(total, 2 * small)
        np.testing.assert_array_equal(big_total, 2 * big + 1)
        np.testing.assert_array_equal(big_difference, np.full_like(big, -1))
        assert (await backend.run_async([big, big])).run_ns > 0  # the grown segment
        # A caller that stops waiting: its answer is read and dropped, and the
        # batch staged behind it keeps its own, from the same child.
        gone = asyncio.ensure_future(backend.run_async([big, big]))
        kept = asyncio.ensure_future(backend.run_async([small, small + 2]))
        await asyncio.sleep(0)
        gone.cancel()
        total, difference = (await kept).outputs
        np.testing.assert_array_equal(difference, np.full_like(small, -2))
        assert process.outstanding == 0

    pid = process.pid
    try:
        uvloop.run(drive())
        assert process.pid == pid and alive(pid)
    finally:
        backend.close()


def test_a_model_that_cannot_load_fails_the_load_with_its_reason(
    tmp_path: Path, sample_repo: Path
) -> None:
    spec = spec_of(sample_repo, "mlp")
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "model.pt2").write_bytes(b"not a zip archive")
    with pytest.raises(InvalidInput, match=r"not a torch\.export archive"):
        ProcessBackend(spec, tmp_path / "1", instances=1, threads=1)


def test_a_killed_compute_process_fails_its_batch_and_is_replaced(sample_repo: Path) -> None:
    spec = spec_of(sample_repo, "mlp")
    backend = ProcessBackend(spec, sample_repo / "mlp" / "1", instances=1, threads=1)
    x = np.zeros((2, 256), np.float32)
    try:
        backend.run([x])
        first = backend.processes[0].pid
        os.kill(first, signal.SIGKILL)
        with pytest.raises(Internal, match="compute process died"):
            backend.run([x])
        assert backend.run([x])[0].shape == (2, 16)
        assert backend.processes[0].pid != first
    finally:
        backend.close()


async def test_unload_and_hot_swap_stop_the_retired_versions_processes(
    inference_server: Any, repo_copy: Path, stub_for: Any
) -> None:
    app = await inference_server(repo_copy, model_control_mode="explicit", load_models=("mlp",))
    served = app.manager.get("mlp")
    pids = [p.pid for p in served.backend.processes]
    assert pids and all(alive(pid) for pid in pids)
    stub = stub_for(app.address)
    x = RNG.standard_normal((3, 256)).astype(np.float32)
    request = pb.ModelInferRequest(model_name="mlp", raw_input_contents=[x.tobytes()])
    request.inputs.add(name="INPUT", datatype="FP32", shape=[3, 256])
    answer = await stub.ModelInfer(request)
    expected = load_backend(served.spec, repo_copy / "mlp" / "1").run([x])[0]
    np.testing.assert_allclose(
        np.frombuffer(answer.raw_output_contents[0], np.float32).reshape(3, 16), expected,
        rtol=1e-5, atol=1e-6,
    )  # fmt: skip
    await stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="mlp"))  # hot swap
    swapped = [p.pid for p in app.manager.get("mlp").backend.processes]
    assert set(swapped).isdisjoint(pids) and not any(alive(pid) for pid in pids)
    await stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="mlp"))
    assert not any(alive(pid) for pid in swapped)
