"""The chart's TLS health probe against the real registry, started from the rendered args.

kubelet's gRPC probes cannot speak TLS, so with `tls.enabled` the chart runs a
small script in the container. Here the registry Deployment of the
postgresql-tls scenario is started as the chart would start it (its args and
MODELPORT_* env, with the Secret's mount, the PVC and the database swapped for
local ones), and the rendered probe script checks it over mutual TLS.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helm.helmchart import RELEASE, Manifest, Render, container, env_of, named, scenario
from tests.registry.service_process import SERVICES
from tests.support.certificates import CertFiles, make_certificates

SERVER_NAME = "modelport.internal"  # tls.serverName in the postgresql-tls scenario
MOUNT = "/etc/modelport/tls/"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    """ca.crt, tls.crt, tls.key as in the chart's Secret (one cert serves both ends)."""
    return make_certificates(tmp_path_factory.mktemp("tls"), SERVER_NAME)


@pytest.fixture(scope="module")
def registry_container(render: Render) -> Manifest:
    objects = render(scenario("postgresql-tls"))
    return container(named(objects, "Deployment", f"{RELEASE}-modelport-registry"))


def local(value: str, certs: CertFiles, data: Path, port: int) -> str:
    """A rendered arg or env value with the pod's paths and port made local."""
    value = value.replace(MOUNT, f"{certs.ca.parent}/").replace("/data/", f"{data}/")
    return value.replace("--grpc-port=8003", f"--grpc-port={port}")


@pytest.fixture(scope="module")
def registry(
    registry_container: Manifest, certs: CertFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    data = tmp_path_factory.mktemp("data")
    port = free_port()
    args = [local(a, certs, data, port) for a in registry_container["args"]]
    env = {
        name: local(str(entry["value"]), certs, data, port)
        for name, entry in env_of(registry_container).items()
        if name.startswith("MODELPORT_") and "value" in entry
    }
    assert {"MODELPORT_TLS_CERT_FILE", "MODELPORT_TLS_KEY_FILE", "MODELPORT_TLS_CA_FILE"} <= set(
        env
    )
    env |= {
        "MODELPORT_DATABASE": f"sqlite:///{data / 'registry.db'}",  # in the chart: a Secret
        "MODELPORT_HOST": "127.0.0.1",
        "MODELPORT_METRICS_PORT": "-1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "modelport.cli", *args],
        env={**os.environ, **env, "PYTHONPATH": str(SERVICES)},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "gRPC listening" in line:
            assert "(mutual TLS)" in line, line
            break
    else:
        pytest.fail(f"the registry did not start (exit {process.wait()})")
    yield port
    process.terminate()
    process.wait(30)


def probe(registry_container: Manifest, certs: CertFiles, *args: str) -> int:
    command = registry_container["readinessProbe"]["exec"]["command"]
    script = command[2].replace(MOUNT, f"{certs.ca.parent}/")
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          timeout=30, check=False)  # fmt: skip
    return done.returncode


def until_serving(registry_container: Manifest, certs: CertFiles, port: int) -> None:
    deadline = time.monotonic() + 30
    while probe(registry_container, certs, str(port), "", SERVER_NAME) != 0:
        assert time.monotonic() < deadline, "the probe never passed"
        time.sleep(0.2)


def test_the_probe_passes_against_the_real_tls_server(
    registry_container: Manifest, certs: CertFiles, registry: int
) -> None:
    until_serving(registry_container, certs, registry)
    service = registry_container["readinessProbe"]["exec"]["command"][4]
    assert probe(registry_container, certs, str(registry), service, SERVER_NAME) == 0


def test_the_probe_fails_for_an_unknown_service_or_another_server_name(
    registry_container: Manifest, certs: CertFiles, registry: int
) -> None:
    until_serving(registry_container, certs, registry)
    assert probe(registry_container, certs, str(registry), "no-such-service", SERVER_NAME) != 0
    assert probe(registry_container, certs, str(registry), "", "someone-else.example") != 0


def test_the_probe_fails_when_nothing_listens(
    registry_container: Manifest, certs: CertFiles
) -> None:
    assert probe(registry_container, certs, str(free_port()), "", SERVER_NAME) != 0
