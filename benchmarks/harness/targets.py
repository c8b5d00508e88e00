"""The servers a benchmark drives, each started as its own process(es) on 127.0.0.1.

- bare: benchmarks/bare_server.py, the transport ceiling (answers without work);
- modelport: `modelport serve inference` on the repository (its Go front on, as by
  default where `make fastpath` built it); modelport-python: with `--fast-path off`;
- router: `modelport serve router` in front of that modelport (static discovery);
- router-fastpath: the same with `--fast-path on` (the Go modelport-fastpath in front);
- kserve / mlserver: the peers, from their own venvs (benchmarks/peers/install.sh),
  serving the same exported programs; skipped when their venv is missing.

Each Target knows the processes whose CPU counts as "the server" (the whole
process tree: --workers children and MLServer's inference pool included).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import grpc_service_pb2_grpc as pbg

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
TICKS = os.sysconf("SC_CLK_TCK")
# perf_analyzer needs ModelConfig (a Triton extension), which KServe and MLServer lack.
PERF_ANALYZER_TARGETS = {"bare", "modelport", "modelport-python", "router", "router-fastpath"}


@dataclass
class Target:
    name: str
    address: str
    # role -> root pid whose process tree is charged to that role ("server", "router").
    roles: dict[str, int]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self.processes):
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree(pid: int) -> list[int]:
    """pid and its live descendants."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    todo.extend(int(c) for c in children.read().split())
        except OSError:
            continue
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process tree."""
    total = 0
    for member in tree(pid):
        try:
            with open(f"/proc/{member}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def wait_ready(
    address: str, model: str, process: subprocess.Popen[bytes], timeout: float = 300
) -> None:
    stub = pbg.GRPCInferenceServiceStub(grpc.insecure_channel(address))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{address}: server exited with {process.returncode}")
        try:
            if stub.ModelReady(pb.ModelReadyRequest(name=model), timeout=2).ready:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{address}: model {model} not ready after {timeout:.0f} s")


def _quiet(log: Path) -> dict[str, object]:
    return {"stdout": subprocess.DEVNULL, "stderr": log.open("ab")}


def start_bare(repo: Path, model: str, logs: Path) -> Target:
    return start_script("bare", [str(BENCH / "bare_server.py"), str(repo)], model, logs)


def _serve(
    service: str, flags: list[str], model: str, logs: Path, log_name: str = ""
) -> tuple[subprocess.Popen[bytes], str]:
    """`modelport serve SERVICE` on a free loopback port, its metrics off; ready for `model`."""
    port = free_port()
    env = {**os.environ, "MODELPORT_LOG_LEVEL": "warning"}
    command = [sys.executable, "-m", "modelport.cli", "serve", service, "--host", "127.0.0.1",
               "--grpc-port", str(port), "--metrics-port", "-1", *flags]  # fmt: skip
    process = subprocess.Popen(command, env=env, **_quiet(logs / f"{log_name or service}.log"))  # type: ignore[call-overload]
    address = f"127.0.0.1:{port}"
    wait_ready(address, model, process)
    return process, address


def start_modelport(
    repo: Path, model: str, logs: Path, extra: list[str], name: str = "modelport"
) -> Target:
    """`serve inference` (its Go front on where built: `--fast-path auto`); its CPU is
    its process tree's (the front and the compute processes are its children)."""
    flags = ["--model-repository", str(repo), "--model-control-mode", "explicit",
             "--load-model", model, *extra]  # fmt: skip
    process, address = _serve("inference", flags, model, logs, log_name=name)
    return Target(name, address, {"server": process.pid}, [process])


def start_router(
    backend: Target, model: str, logs: Path, extra: list[str], name: str = "router"
) -> Target:
    """`serve router` in front of `backend`; as "router-fastpath", with --fast-path on
    (the Go modelport-fastpath, a child of the router: its CPU is the router's too)."""
    if name == "router-fastpath":
        extra = [*extra, "--fast-path", "on"]
    flags = ["--discovery", "static", "--endpoint", f"{model}={backend.address}",
             "--index-interval", "1", "--http-port", "-1", *extra]  # fmt: skip
    process, address = _serve("router", flags, model, logs, log_name=name)
    # The router's own CPU (its process tree) is what it adds; its backend's is "server".
    roles = {"router": process.pid, "server": backend.roles["server"]}
    return Target(name, address, roles, [process])


def peer_python(peer: str) -> Path | None:
    python = ROOT / f".venv-{peer}" / "bin" / "python"
    return python if python.exists() else None


def start_kserve(repo: Path, model: str, logs: Path, threads: int) -> Target | None:
    python = peer_python("kserve")
    if python is None:
        return None
    port, http = free_port(), free_port()
    command = [
        str(python),
        str(BENCH / "peers" / "kserve_server.py"),
        str(repo),
        model,
        str(port),
        str(http),
        str(threads),
    ]
    process = subprocess.Popen(command, **_quiet(logs / "kserve.log"))  # type: ignore[call-overload]
    address = f"127.0.0.1:{port}"
    wait_ready(address, model, process)
    return Target("kserve", address, {"server": process.pid}, [process])


def start_mlserver(repo: Path, model: str, logs: Path) -> Target | None:
    python = peer_python("mlserver")
    if python is None:
        return None
    port, http = free_port(), free_port()
    folder = Path(tempfile.mkdtemp(prefix="bench-mlserver-"))
    subprocess.run(
        [
            sys.executable,
            str(BENCH / "peers" / "mlserver_setup.py"),
            str(repo),
            model,
            str(port),
            str(http),
            str(folder),
        ],
        check=True,
    )
    mlserver = python.with_name("mlserver")
    process = subprocess.Popen(
        [str(mlserver), "start", str(folder)], cwd=folder, **_quiet(logs / "mlserver.log")
    )  # type: ignore[call-overload]
    address = f"127.0.0.1:{port}"
    wait_ready(address, model, process)
    return Target("mlserver", address, {"server": process.pid}, [process])


Starter = Callable[[], "Target | None"]


def start_script(
    name: str, argv: list[str], model: str, logs: Path, python: str = sys.executable
) -> Target:
    """A benchmark script that prints its port on stdout, then serves (prototypes, bare)."""
    process = subprocess.Popen(
        [python, *argv], stdout=subprocess.PIPE, stderr=(logs / f"{name}.log").open("ab")
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.strip():
        process.kill()
        raise RuntimeError(f"{name} did not start: see {logs / name}.log")
    address = f"127.0.0.1:{int(line)}"
    wait_ready(address, model, process)
    return Target(name, address, {"server": process.pid}, [process])
