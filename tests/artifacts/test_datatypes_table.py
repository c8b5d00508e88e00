"""The one datatype table agrees with torch, numpy and the config enum (no server)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from modelport.artifacts import datatypes
from modelport.errors import InvalidInput
from modelport.proto.inference import model_config_pb2 as mc

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)


@pytest.mark.parametrize("dt", datatypes.ALL, ids=lambda dt: dt.name)
def test_each_row_matches_torch_numpy_and_the_config_enum(dt: datatypes.DataType) -> None:
    assert mc.DataType.Value(dt.config)  # a real enum value, not TYPE_INVALID
    if dt.torch_name is not None:
        torch_dtype = getattr(torch, dt.torch_name)
        assert isinstance(torch_dtype, torch.dtype)
        assert datatypes.by_torch_name(torch_dtype) is dt
        assert torch.empty(0, dtype=torch_dtype).element_size() == dt.itemsize
    if dt.numpy is not None:
        assert dt.numpy.itemsize == dt.itemsize
        assert dt.numpy.byteorder in "=|<"  # little-endian, as on the wire
        assert datatypes.NUMPY_OF[dt.name] == dt.numpy


def test_unknown_names_are_refused_with_the_known_ones() -> None:
    with pytest.raises(InvalidInput, match="FP32"):
        datatypes.by_name("FLOAT", what="input 'x'")
    with pytest.raises(InvalidInput, match="complex64"):
        datatypes.by_torch_name(torch.complex64)


def test_native_numpy_dtypes_are_the_table_dtypes() -> None:
    # The inference codec compares decoded arrays' dtypes with the table's.
    assert datatypes.BY_NAME["FP32"].numpy == np.dtype(np.float32)
    assert datatypes.BY_NAME["BOOL"].numpy == np.dtype(np.bool_)
