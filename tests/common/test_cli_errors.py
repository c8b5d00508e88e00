"""Every expected CLI failure, as a user meets it in a real process: one
`Error: …` line, a non-zero exit status, no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parents[2] / "services"


@pytest.fixture(scope="module")
def taken_port() -> Iterator[int]:
    """A port some other process listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("folders")
    (root / "no-config" / "1").mkdir(parents=True)
    (root / "no-config" / "1" / "model.pt").write_bytes(b"x")
    (root / "with-symlink" / "1").mkdir(parents=True)
    (root / "with-symlink" / "config.pbtxt").write_text('name: "m"')
    (root / "with-symlink" / "1" / "model.pt").write_bytes(b"x")
    (root / "with-symlink" / "1" / "weights").symlink_to("/etc/passwd")
    return root


ROUTER = "serve router --host 127.0.0.1 --metrics-port -1 --endpoint m=127.0.0.1:1"
CASES: dict[str, str] = {
    "router on a taken gRPC port": f"{ROUTER} --grpc-port {{port}}",
    "router on a taken HTTP port": f"{ROUTER} --grpc-port 0 --http-port {{port}}",
    # The fast path started, then the HTTP port fails: it is stopped, the router exits.
    "router with the fast path on a taken HTTP port": f"{ROUTER} --grpc-port 0 "
    "--http-port {port} --fast-path on",
    "registry on a taken gRPC port": "serve registry --host 127.0.0.1 --metrics-port -1 "
    "--grpc-port {port} --database sqlite:///{tmp}/r.db --blob-dir {tmp}/blobs",
    "inference on a taken metrics port": "serve inference --host 127.0.0.1 --grpc-port 0 "
    "--metrics-port {port} --model-repository {tmp}",
    "push without config.pbtxt": "models push {folders}/no-config --name m --registry 127.0.0.1:1",
    "push with a symlink": "models push {folders}/with-symlink --name m --registry 127.0.0.1:1",
    "unreachable registry": "models list --registry 127.0.0.1:1",
    "unreachable router": "routes --router 127.0.0.1:1",
}


@pytest.mark.parametrize("case", list(CASES))
def test_cli_failure_is_one_error_line(
    case: str, taken_port: int, folders: Path, tmp_path: Path
) -> None:
    args = CASES[case].format(port=taken_port, tmp=tmp_path, folders=folders).split()
    env = {**os.environ, "PYTHONPATH": str(SERVICES)}
    done = subprocess.run(
        [sys.executable, "-m", "modelport.cli", *args],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, output
    assert not [line for line in output.splitlines() if line.startswith(("E1", "E0"))], output
    if "taken" in case:
        assert str(taken_port) in errors[0]
