"""The ledger writer: format, fsync before return, re-open, corrupt tails, one writer, sealing."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime
from pathlib import Path

import pytest

from securefed.audit import (
    GENESIS_HASH,
    EventType,
    Hazard,
    Ledger,
    LedgerEntry,
    ProblemKind,
    ledger_path,
    record_checkpoint,
    record_final_checkpoint,
    verify_ledger,
)
from securefed.audit.entry import SIGNATURE_LABEL
from securefed.audit.verify import VerifyStatus
from securefed.crypto import SigningKey, get_suite
from securefed.errors import ConfigError, LedgerIntegrityError
from tests.audit import fixed_clock


@pytest.fixture
def key() -> SigningKey:
    return get_suite("default").generate_signing_key()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return ledger_path(tmp_path / "run", "bank-0")


def _open(path: Path, key: SigningKey) -> Ledger:
    return Ledger.open(path, "bank-0", key, clock=fixed_clock())


def test_ledger_path() -> None:
    assert ledger_path("run", "bank-0") == Path("run/ledgers/bank-0.jsonl")
    with pytest.raises(ConfigError):
        ledger_path("run", "../etc/passwd")


def test_first_entry_format(path: Path, key: SigningKey) -> None:
    with _open(path, key) as ledger:
        entry = ledger.append(EventType.HAZARD, {"text": "unencrypted test key"})
    assert entry.seq == 0
    assert entry.prev_hash == GENESIS_HASH
    assert entry.time == "2025-01-01T00:00:00.000Z"
    assert entry.actor == "bank-0"
    assert path.read_bytes() == entry.to_line()
    line = json.loads(path.read_bytes())
    assert set(line) == {
        "seq",
        "time",
        "actor",
        "event",
        "payload",
        "prev_hash",
        "hash",
        "signature",
    }
    assert line["event"] == "hazard"
    body = {k: v for k, v in line.items() if k not in ("hash", "signature")}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert line["hash"] == hashlib.sha256(canonical.encode()).hexdigest()
    key.verify_key().verify(
        bytes.fromhex(line["signature"]), SIGNATURE_LABEL + bytes.fromhex(line["hash"])
    )


def test_append_fsyncs_before_returning(
    path: Path, key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = _open(path, key)
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        real_fsync(fd)
        synced.append(os.fstat(fd).st_size)

    monkeypatch.setattr(os, "fsync", spy)
    entry = ledger.record(Hazard(text="x"))
    assert synced == [len(entry.to_line())]  # the whole line was on disk when fsync ran
    ledger.close()


def test_reopen_continues_the_chain(path: Path, key: SigningKey) -> None:
    with _open(path, key) as ledger:
        first = ledger.record(Hazard(text="one"))
        second = ledger.record(Hazard(text="two"))
        assert ledger.head_hash == second.hash
    with _open(path, key) as ledger:
        assert ledger.next_seq == 2
        assert ledger.head.seq == 1
        third = ledger.record(Hazard(text="three"))
    assert (first.seq, second.seq, third.seq) == (0, 1, 2)
    assert third.prev_hash == second.hash
    assert second.prev_hash == first.hash
    result = verify_ledger(path, key.verify_key())
    assert result.status is VerifyStatus.INCOMPLETE  # an intact chain, never configured or sealed
    assert result.entries == 3


def test_reopen_with_another_key_refuses(path: Path, key: SigningKey) -> None:
    with _open(path, key) as ledger:
        ledger.record(Hazard(text="x"))
    other = get_suite("default").generate_signing_key()
    with pytest.raises(LedgerIntegrityError, match="bad-signature"):
        _open(path, other)


def _corrupt_partial(data: bytes) -> bytes:
    return data[:-10]


def _corrupt_garbage(data: bytes) -> bytes:
    return data + b"{not json\n"


def _corrupt_hash(data: bytes) -> bytes:
    lines = data.splitlines(keepends=True)
    entry = json.loads(lines[-1])
    entry["hash"] = "0" * 64
    lines[-1] = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    return b"".join(lines)


@pytest.mark.parametrize(
    ("corrupt", "kind", "line"),
    [
        (_corrupt_partial, ProblemKind.TRUNCATED, 2),
        (_corrupt_garbage, ProblemKind.MALFORMED, 3),
        (_corrupt_hash, ProblemKind.EDITED, 2),
    ],
)
def test_corrupt_tail_refuses_to_append(
    path: Path, key: SigningKey, corrupt: object, kind: ProblemKind, line: int
) -> None:
    with _open(path, key) as ledger:
        ledger.record(Hazard(text="one"))
        ledger.record(Hazard(text="two"))
    damaged = corrupt(path.read_bytes())  # type: ignore[operator]
    path.write_bytes(damaged)
    with pytest.raises(
        LedgerIntegrityError,
        match=rf"refusing to append: .*line {line} .*{kind.value}",
    ):
        _open(path, key)
    assert path.read_bytes() == damaged  # never repaired silently


def test_one_writer_at_a_time(path: Path, key: SigningKey) -> None:
    with _open(path, key), pytest.raises(ConfigError, match="another writer"):
        _open(path, key)
    with _open(path, key) as ledger:  # released on close
        ledger.record(Hazard(text="x"))


def test_change_between_appends_is_detected(path: Path, key: SigningKey) -> None:
    with _open(path, key) as ledger:
        ledger.record(Hazard(text="x"))
        with path.open("ab") as handle:
            handle.write(b"sneaky\n")
        with pytest.raises(LedgerIntegrityError, match="another writer"):
            ledger.record(Hazard(text="y"))
        with pytest.raises(LedgerIntegrityError):
            ledger.record(Hazard(text="z"))


def test_failed_write_poisons_the_ledger(
    path: Path, key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = _open(path, key)
    ledger.record(Hazard(text="x"))
    size = path.stat().st_size
    real_write = os.write

    def half_then_fail(fd: int, data: bytes) -> int:
        real_write(fd, bytes(data[:5]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_fail)
    with pytest.raises(LedgerIntegrityError, match="could not durably append"):
        ledger.record(Hazard(text="y"))
    monkeypatch.setattr(os, "write", real_write)
    with pytest.raises(LedgerIntegrityError):
        ledger.record(Hazard(text="z"))
    ledger.close()
    assert path.stat().st_size == size  # the partial line was removed
    # an intact chain (never configured or sealed: incomplete, not tampered)
    assert verify_ledger(path, key.verify_key()).status is VerifyStatus.INCOMPLETE


def test_final_checkpoint_seals(path: Path, key: SigningKey) -> None:
    with _open(path, key) as ledger:
        ledger.record(Hazard(text="x"))
        record_final_checkpoint([ledger])
        assert ledger.sealed
        with pytest.raises(ConfigError, match="sealed"):
            ledger.record(Hazard(text="late"))
    with _open(path, key) as ledger:
        assert ledger.sealed
        with pytest.raises(ConfigError, match="sealed"):
            ledger.record(Hazard(text="late"))


def test_checkpoint_rules(path: Path, key: SigningKey, tmp_path: Path) -> None:
    other_key = get_suite("default").generate_signing_key()
    with (
        _open(path, key) as ledger,
        Ledger.open(ledger_path(tmp_path / "run", "bank-1"), "bank-1", other_key) as other,
    ):
        ledger.record(Hazard(text="x"))
        stale = ledger.head
        ledger.record(Hazard(text="y"))
        with pytest.raises(ConfigError, match="current head"):
            record_checkpoint(ledger, [stale, other.head], final=True)
        record_checkpoint(ledger, [stale, other.head], final=False)  # an earlier own head is fine
        with pytest.raises(ConfigError, match="malformed checkpoint"):
            ledger.append(EventType.CHECKPOINT, {"final": True})
        forged = type(stale)("bank-0", 0, "ab" * 32)
        with pytest.raises(ConfigError, match="does not have"):
            record_checkpoint(ledger, [forged], final=False)
    # an intact chain (never configured or sealed: incomplete, not tampered)
    assert verify_ledger(path, key.verify_key()).status is VerifyStatus.INCOMPLETE


def test_misuse_is_refused(path: Path, key: SigningKey) -> None:
    with pytest.raises(ConfigError, match="party id"):
        Ledger.open(path, "bad actor", key)
    with _open(path, key) as ledger:
        with pytest.raises(ConfigError, match="EventType"):
            ledger.append("hazard", {"text": "x"})  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="hex-encode"):
            ledger.append(EventType.HAZARD, {"text": b"x"})
    with pytest.raises(ConfigError, match="closed"):
        ledger.record(Hazard(text="x"))
    naive = Ledger.open(path, "bank-0", key, clock=lambda: datetime(2025, 1, 1))
    with pytest.raises(ConfigError, match="timezone"):
        naive.record(Hazard(text="x"))
    naive.close()


def test_the_signing_key_is_never_written_or_shown(path: Path, key: SigningKey) -> None:
    secret = key.secret_bytes_for_storage().hex()
    with _open(path, key) as ledger:
        entry: LedgerEntry = ledger.record(Hazard(text="x"))
        assert secret not in repr(ledger)
    assert secret not in path.read_text()
    assert secret not in repr(entry)
