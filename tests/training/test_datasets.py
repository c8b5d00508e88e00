"""Datasets in the registry: checked on upload, content-addressed, split the same way everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest
from modelport.artifacts import datasets as ds
from modelport.client.channel import ModelportClientError
from modelport.client.datasets import DatasetClient
from modelport.proto.modelport.registry.v1 import datasets_pb2 as pb

from tests.training.tiny_decoder import DATA


def _jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_push_checks_counts_and_deduplicates(registry: object, tmp_path: Path) -> None:
    address = registry.address  # type: ignore[attr-defined]
    chat = _jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": f"hello {i}"}]}
        for i in range(20)
    ])  # fmt: skip
    with DatasetClient(address) as client:
        first = client.push(DATA / "support.jsonl", name="support", validation_fraction=0.25)
        again = client.push(DATA / "support.jsonl", name="support", validation_fraction=0.25)
        chats = client.push(chat, name="chats")
        assert first.format == pb.COMPLETION and chats.format == pb.CHAT
        assert again.sha256 == first.sha256 and len(client.list("support")) == 1
        assert first.examples == 12 and first.validation_examples >= 1
        assert first.train_examples + first.validation_examples == 12
        assert int(first.stats["approx_tokens"]) > 100
        assert client.get(f"support:{first.sha256[:10]}").sha256 == first.sha256
        client.download("support", tmp_path / "copy.jsonl")
    assert (tmp_path / "copy.jsonl").read_bytes() == (DATA / "support.jsonl").read_bytes()
    # Every reader computes the split the registry counted.
    train, validation = ds.split(tmp_path / "copy.jsonl", 0.25)
    assert len(validation) == first.validation_examples and not set(train) & set(validation)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt": "a", "completion": "b"}\nnot json\n', "line 2: not JSON"),
        (
            '{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": ""}\n',
            "line 2: 'completion' is empty",
        ),
        (
            '{"messages": [{"role": "user", "content": "x"}]}\n' * 3,
            "last message must be the assistant",
        ),
        ('{"text": "x"}\n', "expected 'prompt'/'completion' or 'messages'"),
        ('{"prompt": "a", "completion": "b"}\n', "at least 2 are needed"),
    ],
)
def test_bad_jsonl_is_refused_and_nothing_is_stored(
    registry: object, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with DatasetClient(registry.address) as client:  # type: ignore[attr-defined]
        with pytest.raises(ModelportClientError) as refused:
            client.push(path, name="bad")
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert message in refused.value.message and "dataset 'bad'" in refused.value.message
        assert client.list("bad") == []
        with pytest.raises(ModelportClientError) as missing:
            client.get("bad")
        assert missing.value.code == grpc.StatusCode.NOT_FOUND


def test_npz_checks_rows_dtypes_and_pickles(tmp_path: Path) -> None:
    good = tmp_path / "good.npz"
    np.savez(good, inputs=np.zeros((10, 3), np.float32), targets=np.arange(10))
    summary = ds.summarize(good)
    assert summary.format is ds.DatasetFormat.TENSORS and summary.stats["targets_kind"] == "int"
    ragged = tmp_path / "ragged.npz"
    np.savez(ragged, inputs=np.zeros((9, 3), np.float32), targets=np.zeros(10))
    with pytest.raises(ds.InvalidInput, match="9 rows, targets have 10"):
        ds.summarize(ragged)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, inputs=np.array([object()] * 4, dtype=object), targets=np.zeros(4))
    with pytest.raises(ds.InvalidInput, match="without pickles"):
        ds.summarize(pickled)
