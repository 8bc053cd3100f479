"""The payload guard: no personal data, no vectors, no bytes or numpy values in the ledger."""

from __future__ import annotations

import math
from enum import StrEnum

import numpy as np
import pytest

from securefed.audit.payload import (
    MAX_FLOATS_PER_LIST,
    MAX_ITEMS,
    MAX_STRING_CHARS,
    check_payload,
)
from securefed.errors import ConfigError


class Rule(StrEnum):
    CAP = "cap"


def test_normalises_tuples_enums_and_mappings() -> None:
    payload = {"round": 2, "survivors": (0, 1), "reason": Rule.CAP, "nested": {"ok": None}}
    assert check_payload(payload) == {
        "round": 2,
        "survivors": [0, 1],
        "reason": "cap",
        "nested": {"ok": None},
    }


def test_accepts_short_float_lists_and_long_index_lists() -> None:
    check_payload({"eps": [0.1] * MAX_FLOATS_PER_LIST, "survivors": list(range(MAX_ITEMS))})


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({"model": [0.5] * (MAX_FLOATS_PER_LIST + 1)}, "looks like a vector"),
        ({"digest": b"\x00" * 32}, "hex-encode"),
        ({"w": np.zeros(4)}, "numpy"),
        ({"eps": np.float64(1.0)}, "numpy"),
        ({"n": np.int64(1)}, "numpy"),
        ({"email": "a@b.example"}, "personal or training data"),
        ({"Features": 1}, "personal or training data"),
        ({"text": "x" * (MAX_STRING_CHARS + 1)}, "longer than"),
        ({"ids": list(range(MAX_ITEMS + 1))}, "more than"),
        ({"bad key": 1}, "is not 1-64 characters"),
        ({"eps": math.nan}, "not finite"),
        ({"eps": math.inf}, "not finite"),
        ({"n": 2**64}, "64-bit"),
        ({"s": {1, 2}}, "set is not allowed"),
        ({"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}, "nested deeper"),
    ],
)
def test_refuses(payload: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        check_payload(payload)


def test_refuses_non_mapping_and_non_str_keys() -> None:
    with pytest.raises(ConfigError):
        check_payload([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        check_payload({1: 2})  # type: ignore[dict-item]


def test_error_names_the_path() -> None:
    with pytest.raises(ConfigError, match=r"\$\.outer\[1\]"):
        check_payload({"outer": [1, b"x"]})
