"""Heads, their transcript encoding, and checkpoint payloads."""

from __future__ import annotations

from pathlib import Path

import pytest

from securefed.audit import (
    GENESIS_HASH,
    Checkpoint,
    Hazard,
    Head,
    Ledger,
    collect_heads,
    head_context,
    heads_context,
    ledger_path,
)
from securefed.crypto import get_suite
from securefed.errors import ConfigError

H1, H2 = "11" * 32, "22" * 32


def test_head_context_is_deterministic_and_binds_every_field() -> None:
    base = Head("bank-0", 3, H1)
    assert head_context(base) == head_context(Head("bank-0", 3, H1))
    variants = [Head("bank-1", 3, H1), Head("bank-0", 4, H1), Head("bank-0", 3, H2)]
    encodings = {head_context(h) for h in [base, *variants]}
    assert len(encodings) == 4
    assert head_context(base) == (
        b"securefed/v1/ledger-head" + b"\x06bank-0" + (3).to_bytes(8, "big") + bytes.fromhex(H1)
    )


def test_head_context_of_an_open_ledger(tmp_path: Path) -> None:
    key = get_suite("default").generate_signing_key()
    with Ledger.open(ledger_path(tmp_path, "bank-0"), "bank-0", key) as ledger:
        assert ledger.head == Head("bank-0", -1, GENESIS_HASH)
        empty = head_context(ledger)
        entry = ledger.record(Hazard(text="x"))
        assert head_context(ledger) == head_context(Head("bank-0", 0, entry.hash))
        assert head_context(ledger) != empty
        assert collect_heads([ledger]) == (Head("bank-0", 0, entry.hash),)


def test_heads_context_ignores_order_and_refuses_duplicates() -> None:
    a, b = Head("bank-0", 1, H1), Head("server", 2, H2)
    assert heads_context([a, b]) == heads_context([b, a])
    assert heads_context([a]) != heads_context([a, b])
    with pytest.raises(ConfigError):
        heads_context([a, Head("bank-0", 2, H2)])


@pytest.mark.parametrize(
    ("actor", "seq", "digest"),
    [("bad actor", 0, H1), ("bank-0", -2, H1), ("bank-0", 0, "AB" * 32), ("bank-0", -1, H1)],
)
def test_head_validation(actor: str, seq: int, digest: str) -> None:
    with pytest.raises(ConfigError):
        Head(actor, seq, digest)


def test_checkpoint_payload_round_trip() -> None:
    checkpoint = Checkpoint(True, (Head("server", 5, H2), Head("bank-0", 1, H1)))
    assert [h.actor for h in checkpoint.heads] == ["bank-0", "server"]
    payload = checkpoint.to_payload()
    assert payload == {
        "final": True,
        "heads": {"bank-0": {"seq": 1, "hash": H1}, "server": {"seq": 5, "hash": H2}},
    }
    assert Checkpoint.from_payload(payload) == checkpoint  # type: ignore[arg-type]
    assert checkpoint.head_of("server") == Head("server", 5, H2)
    assert checkpoint.head_of("bank-9") is None


@pytest.mark.parametrize(
    "payload",
    [
        {"final": True},
        {"final": 1, "heads": {"bank-0": {"seq": 1, "hash": H1}}},
        {"final": True, "heads": {}},
        {"final": True, "heads": {"bank-0": {"seq": 1}}},
        {"final": True, "heads": {"bank-0": {"seq": "1", "hash": H1}}},
        {"final": True, "heads": {"bank 0": {"seq": 1, "hash": H1}}},
        {"final": True, "heads": {"bank-0": {"seq": 1, "hash": H1}}, "extra": 1},
    ],
)
def test_malformed_checkpoint_payloads(payload: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 -- the message varies by case
        Checkpoint.from_payload(payload)  # type: ignore[arg-type]


def test_checkpoint_needs_heads() -> None:
    with pytest.raises(ConfigError):
        Checkpoint(False, ())
