"""`--workers 2`: two processes share the port and still look like one server."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import grpc
import numpy as np
from modelport.inference.shared_memory import SHM_ROOT
from modelport.inference.stats_messages import merge_statistics
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import grpc_service_pb2_grpc as pbg
from prometheus_client.parser import text_string_to_metric_families

from tests.inference.requests import simple_request
from tests.inference.test_entrypoint import free_port
from tests.inference.test_triton_stateful import VALUES, requests_of, value

A = np.ones((1, 16), np.int32)


def test_workers_share_a_port_and_answer_as_one(
    sample_repo: Path, triton_repo: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "models"
    shutil.copytree(sample_repo / "simple", repo / "simple")
    shutil.copytree(triton_repo / "simple_dyna_sequence", repo / "simple_dyna_sequence")
    grpc_port, metrics_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "modelport.cli", "serve", "inference", "--workers", "2",
         "--model-repository", str(repo), "--host", "127.0.0.1",
         "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port),
         "--model-control-mode", "explicit", "--load-model", "simple",
         "--load-model", "simple_dyna_sequence", "--allow-shared-memory"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        address = f"127.0.0.1:{grpc_port}"
        # Separate channels are separate connections, which the kernel spreads
        # over the two workers (16 of them all landing on one: p = 3e-5).
        stubs = [
            pbg.GRPCInferenceServiceStub(
                grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
            )
            for _ in range(16)
        ]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if all(
                    s.ModelReady(pb.ModelReadyRequest(name="simple"), timeout=2).ready
                    for s in stubs
                ):
                    break
            except grpc.RpcError:
                pass
            time.sleep(0.3)
        for stub in stubs:
            for _ in range(5):
                stub.ModelInfer(simple_request(A, A))
        stats = stubs[0].ModelStatistics(pb.ModelStatisticsRequest(name="simple")).model_stats
        assert len(stats) == 1 and stats[0].inference_count == 80
        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
            .read()
            .decode()
        )
        counted = sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "modelport_inference_requests_total" and s.labels.get("model") == "simple"
        )
        assert counted == 80
        # A sequence whose requests come over different connections (workers)
        # meets its state: the worker that owns it answers them all.
        for corrid in (7001, 7002, 7003):
            got = [value(stubs[(corrid + i) % 16].ModelInfer(r))
                   for i, r in enumerate(requests_of("simple_dyna_sequence", corrid, VALUES))]  # fmt: skip
            assert got == [1, *VALUES[1:-1], VALUES[-1] + corrid]
        # A shared memory region registered through one worker is known to all.
        key = f"/modelport-workers-{uuid.uuid4().hex[:8]}"
        (SHM_ROOT / key[1:]).write_bytes(bytes(64))
        try:
            stubs[0].SystemSharedMemoryRegister(
                pb.SystemSharedMemoryRegisterRequest(name="r", key=key, byte_size=64)
            )
            assert all(
                "r" in s.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest()).regions
                for s in stubs
            )
            stubs[5].SystemSharedMemoryUnregister(pb.SystemSharedMemoryUnregisterRequest())
            assert not any(
                s.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest()).regions
                for s in stubs
            )
        finally:
            (SHM_ROOT / key[1:]).unlink()
        stubs[3].RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="simple"))
        assert not any(s.ModelReady(pb.ModelReadyRequest(name="simple")).ready for s in stubs)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_statistics_merge_sums_counts_and_batches() -> None:
    def stats(count: int, batch: int) -> pb.ModelStatistics:
        item = pb.ModelStatistics(name="m", version="1", inference_count=count, execution_count=1,
                                  last_inference=count)  # fmt: skip
        item.inference_stats.success.count = count
        item.batch_stats.add(batch_size=batch).compute_infer.count = 1
        return item

    merged = merge_statistics([stats(3, 2), stats(5, 2), stats(1, 4)])
    assert len(merged) == 1
    total = merged[0]
    assert (total.inference_count, total.execution_count, total.last_inference) == (9, 3, 5)
    assert total.inference_stats.success.count == 9
    assert [(b.batch_size, b.compute_infer.count) for b in total.batch_stats] == [(2, 2), (4, 1)]


def test_workers_exit_when_the_supervisor_is_killed(sample_repo: Path) -> None:
    grpc_port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "modelport.cli", "serve", "inference", "--workers", "2",
         "--model-repository", str(sample_repo), "--host", "127.0.0.1",
         "--grpc-port", str(grpc_port), "--metrics-port", "-1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    stub = pbg.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{grpc_port}"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if stub.ServerReady(pb.ServerReadyRequest(), timeout=2).ready:
                break
        except grpc.RpcError:
            time.sleep(0.3)
    time.sleep(1)  # let both workers receive their peers
    process.kill()  # SIGKILL: the supervisor cannot pass anything on
    process.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            stub.ServerLive(pb.ServerLiveRequest(), timeout=1)
        except grpc.RpcError:
            break  # nothing listens on the port any more: the workers are gone
        time.sleep(0.3)
    else:
        raise AssertionError("workers kept serving after their supervisor was killed")
