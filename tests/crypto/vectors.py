"""Loader for the published test vectors in tests/crypto/vectors/*.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTOR_DIR = Path(__file__).parent / "vectors"


def load_vectors(name: str, section: str = "cases") -> list[dict[str, Any]]:
    """The cases of ``vectors/<name>.json`` (each with a ``name`` used as the test id)."""
    document = json.loads((VECTOR_DIR / f"{name}.json").read_text())
    cases: list[dict[str, Any]] = document[section]
    return cases


def case_ids(cases: list[dict[str, Any]]) -> list[str]:
    return [case["name"] for case in cases]


def unhex(value: str) -> bytes:
    return bytes.fromhex(value)
