"""A secured front door started the way an operator starts it: real `modelport serve
inference` and `modelport serve router` processes, configured only through CLI flags,
with certificates minted here (cryptography) and API keys made by `modelport keys`.

    inference  mutual TLS; serves the sample models (simple, mlp) only to the
               router's certificate identity (--allowed-peer)
    router     mutual TLS to callers and to the replica; API keys checked against a
               deny-by-default policy: team-a may use `simple`, team-b may use `simple`
               at 1 request/s (burst 1); nobody is granted `mlp`

Used by the tritonclient suite (run with the project's Python, `python
secured_stack.py FOLDER [REPOSITORY]` prints the stack as one JSON line and serves
until SIGTERM) and imported by the project's own tests (the SDK). REPOSITORY holds
the sample models (`modelport samples`), built into FOLDER when not given.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repository root: `tests` imports

from tests.support.certificates import CertificateAuthority  # noqa: E402

ROUTER_ID = "spiffe://modelport.test/router"
POLICY = """\
roles:
  caller:
    - {actions: [infer, metadata, stream, statistics], models: [simple]}
tenants:
  team-a: {roles: [caller]}
  team-b: {roles: [caller], quota: {requests_per_second: 1, burst: 1}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class StackInfo:
    """What a client needs: addresses (localhost, the name in the certificates), the CA,
    a client certificate the router accepts, and one API key per tenant."""

    router: str
    inference: str
    ca: str
    client_cert: str
    client_key: str
    keys: dict[str, str]


class SecuredStack:
    def __init__(
        self, folder: Path, repository: Path | None = None, modelport: Path | None = None
    ) -> None:
        self.folder = folder
        self.repository = repository
        self.modelport = str(modelport or Path(sys.executable).parent / "modelport")
        self.processes: list[subprocess.Popen[bytes]] = []

    def _run(self, *args: str) -> str:
        done = subprocess.run([self.modelport, *args], capture_output=True, check=True)
        return done.stdout.decode().strip()

    def _serve(self, name: str, args: list[str]) -> None:
        log = (self.folder / f"{name}.log").open("wb")
        self.processes.append(
            subprocess.Popen(
                [self.modelport, "serve", name, *args], stdout=log, stderr=subprocess.STDOUT
            )
        )

    def start(self, timeout: float = 120.0) -> StackInfo:
        tls = self.folder / "tls"
        ca = CertificateAuthority()
        ca_file = ca.write(tls)
        names = {"dns": ["localhost"], "ips": ["127.0.0.1"]}
        router_cert, router_key = ca.issue("router", **names, uris=[ROUTER_ID], client=True).write(
            tls, "router"
        )
        inference_cert, inference_key = ca.issue("inference", **names).write(tls, "inference")
        client_cert, client_key = ca.issue("caller", client=True, server=False).write(tls, "caller")
        keys_file = self.folder / "keys.yaml"
        keys = {
            tenant: self._run("keys", "api-key", "--tenant", tenant, "--file", str(keys_file))
            for tenant in ("team-a", "team-b")
        }
        (self.folder / "policy.yaml").write_text(POLICY)
        repo = self.repository
        if repo is None:
            repo = self.folder / "models"
            self._run("samples", str(repo))

        inference_port, router_port = _free_port(), _free_port()
        common = ["--host", "127.0.0.1", "--metrics-port", "-1", "--grace-seconds", "1",
                  "--tls-ca-file", str(ca_file)]  # fmt: skip
        self._serve("inference", [
            *common, "--grpc-port", str(inference_port), "--model-repository", str(repo),
            "--tls-cert-file", str(inference_cert), "--tls-key-file", str(inference_key),
            "--allowed-peer", ROUTER_ID,
        ])  # fmt: skip
        self._serve("router", [
            *common, "--grpc-port", str(router_port), "--index-interval", "0.5",
            "--tls-cert-file", str(router_cert), "--tls-key-file", str(router_key),
            "--endpoint", f"simple=localhost:{inference_port}",
            "--endpoint", f"mlp=localhost:{inference_port}",
            "--upstream-tls-ca-file", str(ca_file),
            "--upstream-tls-cert-file", str(router_cert),
            "--upstream-tls-key-file", str(router_key),
            "--auth-policy-file", str(self.folder / "policy.yaml"),
            "--api-keys-file", str(keys_file),
        ])  # fmt: skip
        info = StackInfo(
            f"localhost:{router_port}", f"localhost:{inference_port}", str(ca_file),
            str(client_cert), str(client_key), keys,
        )  # fmt: skip
        self._wait_ready(info, timeout)
        return info

    def _wait_ready(self, info: StackInfo, timeout: float) -> None:
        """Until team-a's request for `simple` succeeds through the router."""
        from modelport.client.channel import ModelportClientError, TlsOptions
        from modelport.client.inference import InferenceClient

        tls = TlsOptions(info.ca, info.client_cert, info.client_key)
        deadline = time.monotonic() + timeout
        with InferenceClient(info.router, tls=tls, api_key=info.keys["team-a"], timeout=5) as c:
            while True:
                for process in self.processes:
                    if process.poll() is not None:
                        raise RuntimeError(f"{process.args[2]} exited: {self.logs()}")
                try:
                    if c.is_model_ready("simple"):
                        return
                except ModelportClientError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the secured stack was not ready in time: {self.logs()}")
                time.sleep(0.3)

    def logs(self) -> str:
        return "\n".join(p.read_text()[-2000:] for p in sorted(self.folder.glob("*.log")))

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def main(folder: Path, repository: Path | None) -> None:
    stack = SecuredStack(folder, repository)
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda number, _: stopping.append(number))
    try:
        print(json.dumps(asdict(stack.start())), flush=True)
        while not stopping:
            time.sleep(0.2)
    finally:
        stack.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
