"""A real S3-compatible server for tests: moto's standalone server as a process.

moto lives in its own virtualenv (`.venv-s3`, made by `make s3-server`): it
pins python-dateutil below 3 through botocore, which the kubernetes client in
`.venv` does not accept. The registry talks to it over HTTP on loopback with
obstore, exactly as it talks to S3, MinIO or Ceph.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MOTO_SERVER = ROOT / ".venv-s3" / "bin" / "moto_server"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3Server:
    def __init__(self) -> None:
        if not MOTO_SERVER.exists():
            raise RuntimeError(f"{MOTO_SERVER} is missing: run `make s3-server` (make pytest does)")
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> S3Server:
        self.process = subprocess.Popen(
            [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.process.returncode}")
            try:
                urllib.request.urlopen(self.endpoint, timeout=1).close()
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("moto_server did not answer within 60 s")

    def create_bucket(self, name: str) -> None:
        # moto does not check signatures, so a bare PUT makes the bucket.
        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        urllib.request.urlopen(request, timeout=10).close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def set_credentials() -> None:
    """Credentials the client signs with (moto accepts any)."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "modelport-test",
        "AWS_SECRET_ACCESS_KEY": "modelport-test",
        "AWS_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(key, value)
