"""BYTES between numpy and TorchScript's lists of str; output shapes against the config."""

from __future__ import annotations

import numpy as np
import pytest
from modelport.errors import Internal, InvalidInput
from modelport.inference.torch_values import (
    check_shape,
    is_strings,
    string_depth,
    strings_in,
    strings_out,
)

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)


def test_argument_types() -> None:
    assert string_depth("List[str]") == 1
    assert string_depth("List[List[str]]") == 2
    assert string_depth("Tensor") == 0
    assert string_depth("List[Tensor]") == 0


def test_strings_in_flat_and_nested() -> None:
    array = np.array([[b"a", b"he\x00llo"], [b"\x00\x01", "\u00e9".encode()]], dtype=object)
    assert strings_in(array, 1, "m", "x") == ["a", "he\x00llo", "\x00\x01", "\u00e9"]
    assert strings_in(array, 2, "m", "x") == [["a", "he\x00llo"], ["\x00\x01", "\u00e9"]]
    with pytest.raises(InvalidInput, match="3-deep nested"):
        strings_in(array, 3, "m", "x")
    with pytest.raises(InvalidInput, match=r"not UTF-8 .* at byte 0"):
        strings_in(np.array([b"\xff"], dtype=object), 1, "m", "x")


def test_strings_out_take_the_declared_shape() -> None:
    flat = [str(i) for i in range(6)]
    assert strings_out(flat, (2, 3), "m", "y").shape == (2, 3)
    assert strings_out(flat, (2, -1), "m", "y").tolist() == [[b"0", b"1", b"2"], [b"3", b"4", b"5"]]
    assert strings_out(flat, (-1,), "m", "y").shape == (6,)
    assert strings_out([], (0,), "m", "y").shape == (0,)
    nested = [["a", "b"], ["c", "d"]]
    assert strings_out(nested, (-1, -1), "m", "y").tolist() == [[b"a", b"b"], [b"c", b"d"]]
    with pytest.raises(Internal, match="do not fill the declared shape"):
        strings_out(flat, (2, 2), "m", "y")
    with pytest.raises(Internal, match="return nested lists"):
        strings_out(flat, (-1, -1), "m", "y")
    with pytest.raises(Internal, match="ragged"):
        strings_out([["a"], ["b", "c"]], (2, -1), "m", "y")


def test_round_trip_is_exact() -> None:
    values = np.array([[b"", b"\x00", "\u20ac\U0001f600".encode(), b"x" * 1000]], dtype=object)
    back = strings_out(strings_in(values, 1, "m", "x"), (1, 4), "m", "y")
    assert back.tolist() == values.tolist()
    assert is_strings([["a"], []]) and is_strings([]) and not is_strings([1])


def test_output_shapes_are_checked() -> None:
    check_shape(np.zeros((3, 16)), (-1, 16), "m", "y")
    with pytest.raises(Internal, match=r"output 'y' has shape \[10\]; its config declares \[1\]"):
        check_shape(np.zeros(10), (1,), "m", "y")
    with pytest.raises(Internal):
        check_shape(np.zeros((3, 16, 1)), (-1, 16), "m", "y")
