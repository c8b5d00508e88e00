"""`modelport serve registry` as a real subprocess, on a port it picks itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICES = Path(__file__).resolve().parents[2] / "services"


class RegistryProcess:
    def __init__(self, database: str, blob_dir: Path, *extra: str) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": f"{SERVICES}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        }
        env["MODELPORT_BLOB_DIR"] = str(blob_dir)  # flags also come from MODELPORT_*
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "modelport.cli", "serve", "registry",
                "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "-1",
                "--database", database, *extra,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self.log: list[str] = []
        self._port: int | None = None
        self._found = threading.Event()
        threading.Thread(target=self._read_log, daemon=True).start()
        if not self._found.wait(60) or self._port is None:
            self.kill()
            raise RuntimeError("registry did not start:\n" + "".join(self.log[-30:]))
        self.address = f"127.0.0.1:{self._port}"
        self._wait_serving()

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)
            match = re.search(r"gRPC listening on [\d.]+:(\d+)", line)
            if match:
                self._port = int(match.group(1))
                self._found.set()
        self._found.set()

    def _wait_serving(self) -> None:
        deadline = time.monotonic() + 30
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise RuntimeError("registry never reported SERVING")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def terminate(self) -> int:
        self.process.terminate()
        return self.process.wait(30)
