"""A throwaway PostgreSQL server on loopback for tests, from Debian's packages."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _install() -> str:
    """Install Debian's postgresql; returns why not when that is impossible."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "PostgreSQL is not installed and this user cannot apt-get install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "postgresql"]):
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            return f"'{' '.join(cmd)}' failed: {result.stderr.strip()[-300:]}"
    return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """initdb + pg_ctl start as the `postgres` user in a temp folder; `url` for SQLAlchemy."""

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="modelport-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert self.bin is not None
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    def start(self) -> str:
        """Start; returns "" or the reason it cannot run here."""
        if self.bin is None:
            reason = _install()
            self.bin = _bin_dir()
            if self.bin is None:
                return reason or "PostgreSQL binaries not found after install"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        init = self._as_postgres(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"
        )
        if init.returncode != 0:
            return f"initdb failed: {init.stderr.strip()[-300:]}"
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"
        started = self._as_postgres(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"),
            "-w", "start",
        )  # fmt: skip
        if started.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            return f"pg_ctl start failed: {started.stderr.strip()[-300:]} {log[-300:]}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return ""
            time.sleep(0.2)
        return "PostgreSQL did not accept connections within 30 s"

    def create_database(self, name: str) -> str:
        assert self.bin is not None
        result = self._as_postgres("createdb", "-h", "127.0.0.1", "-p", str(self.port), name)
        if result.returncode != 0:
            raise RuntimeError(result.stderr)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.bin is not None and self.data.exists():
            self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
