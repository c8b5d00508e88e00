"""Classification post-processing: top-k "value:index[:label]" strings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from modelport.errors import InvalidInput
from modelport.inference.classification import check_count, classify, read_labels

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)


def test_the_protocol_examples() -> None:
    # The extension's own example: [1.1, 3.3, 0.5, 2.4], top 2.
    out = classify(np.array([1.1, 3.3, 0.5, 2.4], np.float32), 2, batched=False)
    assert out.tolist() == [b"3.300000:1", b"2.400000:3"]
    labels = [f"index_{i}_label" for i in range(4)]
    out = classify(np.array([[1, 5, 10, 4]], np.int32), 2, batched=True, labels=labels)
    assert out.shape == (1, 2)
    assert out.tolist() == [[b"10:2:index_2_label", b"5:1:index_1_label"]]


def test_batched_rows_are_classified_separately_and_flattened() -> None:
    scores = np.array([[[0.1, 0.9], [0.5, 0.2]], [[0.3, 0.3], [0.8, 0.0]]], np.float64)
    out = classify(scores, 3, batched=True, labels=["a", "b", "c"])
    assert out.tolist() == [
        [b"0.900000:1:b", b"0.500000:2:c", b"0.200000:3"],
        [b"0.800000:2:c", b"0.300000:0:a", b"0.300000:1:b"],
    ]


def test_k_is_capped_at_the_row_size_and_ties_keep_index_order() -> None:
    out = classify(np.array([[7, 7, 7]], np.uint64), 10, batched=True)
    assert out.tolist() == [[b"7:0", b"7:1", b"7:2"]]
    big = np.array([[2**64 - 1, 0, 2**63]], np.uint64)
    assert classify(big, 1, batched=True).tolist() == [[f"{2**64 - 1}:0".encode()]]


@pytest.mark.parametrize("dtype", [np.bool_, np.float16, np.object_])
def test_unsortable_types_are_refused(dtype: type) -> None:
    with pytest.raises(InvalidInput, match="class result not available"):
        classify(np.zeros((1, 3), dtype=dtype), 1, batched=True)
    with pytest.raises(InvalidInput, match="unsupported type 'BF16'"):
        classify(np.zeros((1, 3), dtype=np.uint16), 1, batched=True, datatype="BF16")


def test_count_parameter_validation() -> None:
    assert check_count("out", 3) == 3
    with pytest.raises(InvalidInput, match="expected int64_param"):
        check_count("out", "3")
    with pytest.raises(InvalidInput, match="expected >= 0"):
        check_count("out", 0)


def test_labels_file(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_bytes(b"cat\r\ndog\nbird")
    assert read_labels(path) == ["cat", "dog", "bird"]
