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
    args = ["serve", "router", "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "-1",
            "--http-port", "-1"]  # fmt: skip
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
        # The call went through the fast path (on by default where its binary is
        # built), which reports its picks to the router every 0.5 s.
        picks_by = time.monotonic() + 5
        while True:
            result = await asyncio.to_thread(
                CliRunner().invoke, routes, ["--router", address, "--json"]
            )
            assert result.exit_code == 0, result.output
            (model,) = json.loads(result.output)["models"]
            replica = model["replicas"][0]
            if int(replica["picks"]) >= 1 or time.monotonic() > picks_by:  # int64: JSON strings
                break
            await asyncio.sleep(0.1)
        assert model["name"] == "simple"
        assert model["replicas"][0]["versions"] == ["1", "2"]
        assert int(replica["in_flight"]) == 0 and int(replica["picks"]) >= 1
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


def test_routes_table_keeps_long_addresses_whole(capsys) -> None:  # type: ignore[no-untyped-def]
    """On a pipe's 80 columns, a cluster DNS address and a long model name are
    printed whole (the table grows; the terminal soft-wraps) and no column drops."""
    from modelport.cli.routes import print_routes
    from modelport.proto.modelport.router.v1 import router_pb2

    answer = router_pb2.ListRoutesResponse()
    route = answer.models.add(name="resnet-fifty-classifier-with-a-long-name")
    route.unserved_aliases.append("canary")
    addresses = [f"10.244.{i}.17.resnet-headless.models.svc.cluster.local:8001" for i in (1, 2)]
    for address in addresses:
        route.replicas.add(address=address, versions=["11", "12"], ready=True, picks=123456)
    print_routes(answer)
    out = capsys.readouterr().out
    assert all(address in out for address in addresses)
    assert route.name in out and "123456" in out and "picks" in out and "…" not in out
