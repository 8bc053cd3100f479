"""The canonical encoding: deterministic, one spelling per value, the float rule, refusals."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from securefed.audit.canonical import decode_canonical, encode_canonical
from securefed.errors import ConfigError


def test_known_encoding() -> None:
    value = {"b": [1, 0.1, 1.0, 1e-05, -0.0, 1e300, True, None, 'é\n"x"'], "a": {}, "A": -7}
    assert encode_canonical(value) == (
        b'{"A":-7,"a":{},"b":[1,0.1,1.0,1e-05,-0.0,1e+300,true,null,"\\u00e9\\n\\"x\\""]}'
    )


def test_insertion_order_does_not_matter() -> None:
    one = {"x": 1, "y": {"q": [1, 2], "p": "s"}}
    two = {"y": {"p": "s", "q": [1, 2]}, "x": 1}
    assert encode_canonical(one) == encode_canonical(two)


def test_matches_the_standard_library_spelling() -> None:
    """An auditor can recompute entry hashes with json.dumps(sort_keys, compact, ASCII)."""
    value = {"seq": 3, "payload": {"epsilon": 0.30000000000000004, "delta": 1e-5, "ids": [2, 0]}}
    standard = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert encode_canonical(value) == standard.encode()
    assert hashlib.sha256(encode_canonical(value)).hexdigest() == (
        hashlib.sha256(standard.encode()).hexdigest()
    )


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_round_trip_exactly_and_stay_floats(x: float) -> None:
    data = encode_canonical({"x": x})
    back = decode_canonical(data)
    assert isinstance(back, dict)
    assert type(back["x"]) is float
    assert back["x"] == x
    assert math.copysign(1, back["x"]) == math.copysign(1, x)
    assert data == b'{"x":' + repr(x).encode() + b"}"


@given(st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
))  # fmt: skip
def test_decode_inverts_encode(value: object) -> None:
    data = encode_canonical(value)  # type: ignore[arg-type]
    assert encode_canonical(decode_canonical(data)) == data


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        -math.inf,
        2**63,
        -(2**63) - 1,
        b"digest",
        (1, 2),
        {1: "a"},
        {1, 2},
        np.float64(0.5),
        np.int64(3),
        np.zeros(3),
        "\ud800",
        object(),
    ],
    ids=repr,
)
def test_refuses_values_outside_the_format(value: object) -> None:
    with pytest.raises(ConfigError):
        encode_canonical({"v": value})  # type: ignore[dict-item]


def test_refuses_deep_nesting() -> None:
    value: object = 1
    for _ in range(40):
        value = [value]
    with pytest.raises(ConfigError, match="nested"):
        encode_canonical(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        b'{"a": 1}',
        b'{"b":1,"a":2}',
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b'{"a":1,"a":1}',
        b'{"a":1.00}',
        b'{"a":1E5}',
        b'{"a":"\xc3\xa9"}',
        b"[1,2]\n",
        b"\xff",
        b"not json",
        b'{"a":18446744073709551616}',
    ],
)
def test_decode_refuses_non_canonical_or_invalid_text(text: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 -- the message varies by case
        decode_canonical(text)
