"""`--compile aoti`: an AOTInductor package with a dynamic batch dimension, served by the
real inference service with dynamic batching at batch 32, equal to the parent; and the
registry's refusal of such a package pushed by hand (it is native code)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest
from modelport.artifacts import archive, archive_checks
from modelport.artifacts.config import read_config
from modelport.compression.derive import derive_folder
from modelport.compression.spec import DeriveSpec
from modelport.errors import InvalidInput
from modelport.proto.inference import grpc_service_pb2 as pb

from tests.compression.tiny_models import NAME, expected, inputs
from tests.inference.requests import output, raw_request


@pytest.fixture(scope="session")
def aoti_repo(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model compiled once for the whole session (compiling takes a minute)."""
    repo = tmp_path_factory.mktemp("aoti-repo")
    derived = derive_folder(tiny_dir, DeriveSpec(compile="aoti"), repo / NAME)
    assert derived.parameters["aoti_batch"] == "1..64"
    return repo


async def test_aoti_package_serves_batch_32_equal_to_the_parent(
    aoti_repo: Path, inference_server, stub_for
) -> None:
    config = read_config(aoti_repo / NAME)
    assert config is not None and config.platform == "torch_aoti"
    app = await inference_server(aoti_repo)
    stub = stub_for(app.address)
    x = inputs(32)
    want = expected(x)
    # One request of batch 32, then 32 requests of one row that the batcher joins.
    answer = await stub.ModelInfer(raw_request(NAME, {"INPUT": ("FP32", x)}), timeout=30)
    np.testing.assert_allclose(output(answer, "OUTPUT", np.float32), want, rtol=1e-4, atol=1e-5)
    answers = await asyncio.gather(
        *(
            stub.ModelInfer(raw_request(NAME, {"INPUT": ("FP32", x[i : i + 1])}), timeout=30)
            for i in range(32)
        )
    )
    rows = np.concatenate([output(a, "OUTPUT", np.float32) for a in answers])
    np.testing.assert_allclose(rows, want, rtol=1e-4, atol=1e-5)
    stats = (await stub.ModelStatistics(pb.ModelStatisticsRequest(name=NAME))).model_stats[0]
    assert stats.inference_count == 64
    assert stats.execution_count < 33  # the single-row requests ran batched


def test_registry_refuses_an_aoti_package_pushed_by_hand(aoti_repo: Path, tmp_path: Path) -> None:
    tar = tmp_path / "model.tar"
    archive.pack_directory(aoti_repo / NAME, tar)
    with pytest.raises(InvalidInput, match=r"compiled native code.*derive jobs"):
        archive_checks.prepare(tar, NAME, tmp_path / "work", tmp_path / "out.tar", 1 << 26)
    # From the registry's own derive worker it is stored (checked for shape, not loaded).
    shutil.rmtree(tmp_path / "work", ignore_errors=True)
    prepared = archive_checks.prepare(
        tar, NAME, tmp_path / "work2", tmp_path / "out.tar", 1 << 26, allow_native=True
    )
    assert prepared.signature.platform == "torch_aoti"
