"""`modelport serve router` as a real process, and `modelport routes`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from click.testing import CliRunner
from modelport.cli.routes import routes
from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc

from tests.router.router_helpers import simple_request

SERVICES = Path(__file__).resolve().parents[2] / "services"
SERVE = "from modelport.cli import main; main(prog_name='modelport')"


async def test_serve_router_process_routes_and_drains(replicas, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a = await replicas({"simple": ["1", "2"]})
    env = {
        **os.environ,
        "PYTHONPATH": str(SERVICES),
        "MODELPORT_ENDPOINT": f"simple={a.address}",  # flags also read MODELPORT_<FLAG>
    }
    args = [
        "serve",
        "router",
        "--host",
        "127.0.0.1",
        "--grpc-port",
        "0",
        "--metrics-port",
        "-1",
        "--http-port",
        "-1",
    ]
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE, *args], stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stderr is not None
        port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            line = await asyncio.to_thread(process.stderr.readline)
            found = re.search(r"gRPC listening on 127\.0\.0\.1:(\d+)", line)
            port = int(found.group(1)) if found else None
        assert port, "router did not start"
        address = f"127.0.0.1:{port}"
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for _ in range(100):
                try:
                    answer = await stub.ModelInfer(simple_request(version="1"), timeout=5)
                    break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.05)
            assert answer.model_version == "1"
        result = await asyncio.to_thread(
            CliRunner().invoke, routes, ["--router", address, "--json"]
        )
        assert result.exit_code == 0, result.output
        (model,) = json.loads(result.output)["models"]
        assert model["name"] == "simple"
        assert model["replicas"][0]["versions"] == ["1", "2"]
        replica = model["replicas"][0]
        assert int(replica["in_flight"]) == 0 and int(replica["picks"]) >= 1  # int64: JSON strings
        table = await asyncio.to_thread(CliRunner().invoke, routes, ["--router", address])
        assert a.address in table.output and "default" in table.output
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_routes_names_an_unreachable_router() -> None:
    result = CliRunner().invoke(routes, ["--router", "127.0.0.1:1"])
    assert result.exit_code != 0 and "127.0.0.1:1" in result.output
