"""`modelport serve …` as a real subprocess, on a port it picks itself (port 0)."""

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


class ServiceProcess:
    """`modelport serve SERVICE ARGS…`; `address` once it reports SERVING."""

    def __init__(self, service: str, *args: str, env: dict[str, str] | None = None) -> None:
        full_env = {
            **os.environ,
            "PYTHONPATH": f"{SERVICES}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            **(env or {}),
        }
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "modelport.cli", "serve", service,
                "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "-1", *args,
            ],
            env=full_env,
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
            raise RuntimeError(f"{service} did not start:\n" + "".join(self.log[-30:]))
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
        raise RuntimeError("never reported SERVING:\n" + "".join(self.log[-30:]))

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def terminate(self) -> int:
        self.process.terminate()
        return self.process.wait(30)


class RegistryProcess(ServiceProcess):
    def __init__(self, database: str, blob_dir: Path, *args: str) -> None:
        # --blob-dir through its environment variable: flags also read MODELPORT_<FLAG>.
        super().__init__(
            "registry", "--database", database, *args, env={"MODELPORT_BLOB_DIR": str(blob_dir)}
        )
