"""The canonical JSON encoding of ledger entries: one byte string per value, always the same.

Rules (the hash of an entry is SHA-256 over these bytes, so they are the ledger's format):

* values are ``null``, ``true``/``false``, integers, floats, strings, arrays and objects;
  the Python types are exactly ``None``, ``bool``, ``int``, ``float``, ``str``, ``list`` and
  ``dict`` with ``str`` keys (subclasses such as ``numpy.float64`` are refused);
* objects have their keys sorted by Unicode code point; no key appears twice;
* no whitespace anywhere (separators ``,`` and ``:``);
* strings are escaped as :func:`json.dumps` does with ``ensure_ascii=True``, so every encoding is
  pure ASCII (and hence also valid UTF-8); lone surrogates are refused;
* integers are written in decimal and must lie in ``[-2**63, 2**63)`` (so any JSON reader with
  64-bit integers reads them exactly);
* floats must be finite and are written as Python's ``repr(float)``: the shortest decimal string
  that reads back as the same IEEE-754 double (``0.1``, ``1.0``, ``1e-05``, ``-0.0``). A float
  always contains ``.`` or ``e``, so it never reads back as an integer;
* nesting is at most :data:`MAX_DEPTH` levels deep.

:func:`decode_canonical` parses a line and refuses anything that is not exactly the canonical
encoding of what it parsed (extra spaces, unsorted keys, ``NaN``, duplicate keys, ``1.00``), so a
verifier never has to reason about two spellings of one entry.
"""

from __future__ import annotations

import json
import math
from typing import TypeAlias

from securefed.errors import ConfigError

__all__ = ["MAX_DEPTH", "JsonValue", "decode_canonical", "encode_canonical"]

JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"

MAX_DEPTH = 32
_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1
_SCALARS = (bool, int, float, str)


def encode_canonical(value: JsonValue) -> bytes:
    """The canonical encoding of ``value`` (ASCII bytes, see the module docstring).

    Raises:
        ConfigError: a value of another type (``bytes``, numpy scalars or arrays, tuples, sets,
            objects with non-``str`` keys), a non-finite float, an integer outside 64 bits, a lone
            surrogate in a string, or nesting deeper than :data:`MAX_DEPTH`.
    """
    out: list[str] = []
    _encode(value, out, depth=0, where="$")
    return "".join(out).encode("ascii")


def decode_canonical(data: bytes) -> JsonValue:
    """Parse ``data`` and check that it is exactly the canonical encoding of its value.

    Raises:
        ValueError: ``data`` is not UTF-8 JSON, contains ``NaN``/``Infinity`` or a duplicate key,
            or is a valid JSON text in a non-canonical spelling. (A plain ``ValueError``: the
            verifier turns it into a MALFORMED problem with the message.)
    """
    try:
        text = data.decode("utf-8")
        value: JsonValue = json.loads(
            text, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys
        )
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} at column {exc.colno}") from None
    try:
        again = encode_canonical(value)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    if again != data:
        raise ValueError("not in canonical form (spacing, key order or number spelling differs)")
    return value


def _encode(value: object, out: list[str], *, depth: int, where: str) -> None:
    if depth > MAX_DEPTH:
        raise ConfigError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    kind = type(value)
    if value is None or kind in _SCALARS:
        out.append(_scalar(value, where))
    elif isinstance(value, list) and kind is list:
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out, depth=depth + 1, where=f"{where}[{i}]")
        out.append("]")
    elif isinstance(value, dict) and kind is dict:
        _encode_object(value, out, depth=depth, where=where)
    else:
        raise ConfigError(f"{where}: {kind.__name__} is not a JSON value of the ledger")


def _scalar(value: object, where: str) -> str:
    """Encode ``None`` or a value whose type is exactly one of :data:`_SCALARS`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise ConfigError(f"{where}: integer outside the signed 64-bit range")
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{where}: float {value!r} is not finite")
        return repr(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(f"{where}: string contains a lone surrogate") from None
        return json.dumps(value, ensure_ascii=True)
    return "null"


def _encode_object(value: dict[object, object], out: list[str], *, depth: int, where: str) -> None:
    for key in value:
        if type(key) is not str:
            raise ConfigError(f"{where}: object keys must be str, not {type(key).__name__}")
    out.append("{")
    for i, key in enumerate(sorted(value, key=str)):
        if i:
            out.append(",")
        _encode(key, out, depth=depth + 1, where=where)
        out.append(":")
        _encode(value[key], out, depth=depth + 1, where=f"{where}.{key}")
    out.append("}")


def _refuse_constant(name: str) -> JsonValue:
    raise ValueError(f"{name} is not allowed (floats must be finite)")


def _unique_keys(pairs: list[tuple[str, JsonValue]]) -> dict[str, JsonValue]:
    result: dict[str, JsonValue] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result
