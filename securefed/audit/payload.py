"""The payload guard: what an event's payload may contain, so the ledger never holds personal data.

The ledger is kept for years and shown to auditors, so it must not itself become a privacy risk
(LINDDUN: disclosure, linkability). Payloads therefore carry *parameters and decisions* (ε, δ,
round numbers, roster indices, party ids, SHA-256 digests in hex, short reasons), never data.
:func:`check_payload` enforces a conservative approximation of that rule and raises
:class:`~securefed.errors.ConfigError` (before anything is written) for:

* any type other than ``str``, ``int``, ``float``, ``bool``, ``None``, lists (or tuples) and
  mappings with ``str`` keys -- in particular ``bytes`` (hex-encode a digest instead), numpy
  arrays and numpy scalars (convert with ``int()`` / ``float()`` deliberately);
* a non-finite float, or an integer outside the signed 64-bit range;
* a list with more than :data:`MAX_FLOATS_PER_LIST` floats: that is a vector (a model, a gradient,
  a feature row), and no ledger event needs one;
* a list or mapping with more than :data:`MAX_ITEMS` items, a string longer than
  :data:`MAX_STRING_CHARS` characters, a key that is not 1-64 characters of ``[A-Za-z0-9._-]``,
  nesting deeper than :data:`MAX_DEPTH`, or a payload whose encoding exceeds :data:`MAX_BYTES`;
* a key whose lower-cased name is in :data:`FORBIDDEN_KEYS` (``email``, ``features``,
  ``gradient``, ...): a tripwire for a caller that is about to log data by mistake.

Enum members are replaced by their value, tuples by lists and mappings by dicts, so the returned
payload is exactly what the ledger stores. The guard cannot recognise personal data inside a
short string (a free-text HAZARD message that quotes a customer's name): callers must never put
data-derived text into a payload.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import Enum
from typing import cast

from securefed.audit.canonical import JsonValue, encode_canonical
from securefed.errors import ConfigError

__all__ = [
    "FORBIDDEN_KEYS",
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_FLOATS_PER_LIST",
    "MAX_ITEMS",
    "MAX_STRING_CHARS",
    "check_payload",
]

MAX_DEPTH = 6
MAX_ITEMS = 4096
MAX_FLOATS_PER_LIST = 16
MAX_STRING_CHARS = 1024
MAX_BYTES = 256 * 1024
FORBIDDEN_KEYS = frozenset(
    {
        "account_number",
        "address",
        "customer",
        "customer_id",
        "email",
        "embedding",
        "features",
        "gradient",
        "gradients",
        "id_number",
        "labels",
        "national_id",
        "phone",
        "raw_data",
        "record",
        "records",
        "ssn",
        "vector",
    }
)
_KEY = re.compile(r"[A-Za-z0-9._-]{1,64}")


def check_payload(payload: Mapping[str, object]) -> dict[str, JsonValue]:
    """A normalised copy of ``payload`` if it passes the guard (see the module docstring).

    Raises:
        ConfigError: naming the offending path (``$.key[3]``) and the rule it breaks.
    """
    if not isinstance(payload, Mapping):
        raise ConfigError(f"a payload must be a mapping, not {type(payload).__name__}")
    result = _normalise_mapping(payload, depth=0, where="$")
    size = len(encode_canonical(result))
    if size > MAX_BYTES:
        raise ConfigError(f"payload encodes to {size} bytes, more than {MAX_BYTES}")
    return result


def _normalise(value: object, *, depth: int, where: str) -> JsonValue:
    if depth > MAX_DEPTH:
        raise ConfigError(f"{where}: payload nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, Enum):
        value = value.value
    if value is None or type(value) in (bool, int, float):
        return _number(value, where)
    if type(value) is str:
        if len(value) > MAX_STRING_CHARS:
            raise ConfigError(f"{where}: string longer than {MAX_STRING_CHARS} characters")
        return value
    if isinstance(value, list | tuple):
        return _normalise_list(value, depth=depth, where=where)
    if isinstance(value, Mapping):
        return _normalise_mapping(value, depth=depth, where=where)
    raise ConfigError(f"{where}: {_refusal(value)}")


def _number(value: object, where: str) -> JsonValue:
    checked = cast(JsonValue, value)  # None, or exactly bool, int or float (checked by caller)
    try:
        encode_canonical(checked)  # finiteness and the 64-bit range
    except ConfigError as exc:
        raise ConfigError(f"{where}: {str(exc).removeprefix('$: ')}") from None
    return checked


def _normalise_list(
    value: list[object] | tuple[object, ...], *, depth: int, where: str
) -> JsonValue:
    if len(value) > MAX_ITEMS:
        raise ConfigError(f"{where}: list of {len(value)} items, more than {MAX_ITEMS}")
    floats = sum(type(item) is float for item in value)
    if floats > MAX_FLOATS_PER_LIST:
        raise ConfigError(
            f"{where}: list of {floats} floats looks like a vector (a model, gradient or data "
            f"row); at most {MAX_FLOATS_PER_LIST} floats per list are allowed in the ledger"
        )
    return [
        _normalise(item, depth=depth + 1, where=f"{where}[{i}]") for i, item in enumerate(value)
    ]


def _normalise_mapping(
    value: Mapping[str, object], *, depth: int, where: str
) -> dict[str, JsonValue]:
    if len(value) > MAX_ITEMS:
        raise ConfigError(f"{where}: mapping of {len(value)} items, more than {MAX_ITEMS}")
    result: dict[str, JsonValue] = {}
    for key, item in value.items():
        if type(key) is not str or not _KEY.fullmatch(key):
            raise ConfigError(f"{where}: key {key!r} is not 1-64 characters of [A-Za-z0-9._-]")
        if key.lower() in FORBIDDEN_KEYS:
            raise ConfigError(
                f"{where}: key {key!r} names personal or training data, which the ledger never "
                "records"
            )
        result[key] = _normalise(item, depth=depth + 1, where=f"{where}.{key}")
    return result


def _refusal(value: object) -> str:
    kind = type(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "bytes are not allowed in a payload (hex-encode a digest: digest.hex())"
    if kind.__module__.split(".")[0] == "numpy":
        return (
            f"numpy value ({kind.__name__}) refused: arrays never belong in the ledger; convert "
            "a scalar explicitly with int() or float()"
        )
    return f"{kind.__name__} is not allowed in a payload (str, int, float, bool, None, list, dict)"
