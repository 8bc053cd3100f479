"""The records' spend record: an institution's privacy spend kept next to its records.

A privacy budget protects *records*, not an output directory. Every participation that trains on
a tenant's records -- a run, a resumed run, a comparison baseline, a deployment agent -- charges
the same file in the records' directory, ``securefed-spend/tenant_<i>.json``, and every new
participation on those records starts from what earlier ones spent (docs/dp.md, "The budget
follows the records")::

    {
      "format": "securefed-spend", "version": 1,
      "tenant": 3, "records_sha256": "9f2c...",
      "accountant": "prv", "delta": 1e-05,
      "participations": [
        {"run_id": "5b1e...", "method": "group", "party": "bank-3", "released": true,
         "dp": true, "history": [[1.12, 0.19, 40]], "epsilon": 2.377,
         "started": "2026-12-07T15:00:00Z", "updated": "2026-12-07T15:02:11Z"}
      ],
      "resets": [
        {"time": "...", "reason": "...", "epsilon_before": 6.4, "participations": [...]}
      ]
    }

Rules (each enforced here or by :class:`~securefed.dp.trainer.PrivateTrainer`):

* **One composition.** The records' epsilon is the accountant's epsilon of the histories of
  every *released* participation since the last reset, composed (their Poisson-sampled Gaussian
  steps concatenated), at the record's ``delta``. A charge is computed, checked against the
  budget and written here under an exclusive lock, BEFORE the round trains; so neither a crash,
  nor a rerun into a new output directory, nor two runs at once get a fresh budget.
* **Released or not.** A participation whose models never leave the institution (local
  training) has ``"released": false``: it is recorded, costs nothing outside the institution and
  is not composed into the others' spend.
* **Without DP** a released participation has ``"dp": false``; once it trains
  (:meth:`SpendAccount.mark_unbounded`) its epsilon is null and the records' epsilon unbounded:
  later DP participations are refused until an explicit reset.
* **Comparison methods of one run** (a simulation's baselines) are separate participations of
  the same ``run_id``: each is planned and checked against what participations of OTHER runs
  spent, and all of them count afterwards. A run with baselines therefore ends above its budget
  by design (its ledgers say so), and later runs on those records are refused until a reset.
* **Same records, same accounting.** The file names the SHA-256 of the records it accounts for
  (``records_sha256``: the tenant's training samples and labels as loaded) and the accountant
  and delta; a participation on other records, or with another accountant or delta, is refused
  (:class:`~securefed.errors.ConfigError`) rather than silently starting a new account.
* **Resets are explicit.** :func:`reset_spend` (``securefed budget reset``) archives the counted
  participations with a reason and the epsilon they had reached; every later run ledgers each
  reset as a hazard, so the audit report shows it.

What this does not stop: deleting ``securefed-spend/`` together with nothing else. In a
simulation nothing outside the records' directory remembers the spend (the earlier runs'
ledgers still show it); in a deployment the coordinator's ledger does. docs/dp.md says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from securefed.dp.accounting import History
from securefed.dp.config import AccountantKind
from securefed.errors import ConfigError, PrivacyBudgetExceeded
from securefed.files import write_atomic

__all__ = [
    "SPEND_DIR",
    "Participation",
    "Reset",
    "SpendAccount",
    "SpendRecord",
    "load_spend",
    "records_fingerprint",
    "reset_spend",
    "spend_path",
]

#: The directory, next to a tenant's records, that holds the spend records.
SPEND_DIR = "securefed-spend"
_FORMAT = "securefed-spend"
_VERSION = 1
_MAX_BYTES = 4 * 1024 * 1024


def spend_path(records_dir: Path, tenant: int) -> Path:
    """Where the spend record of tenant ``tenant`` of ``records_dir`` lives."""
    return Path(records_dir) / SPEND_DIR / f"tenant_{tenant}.json"


def records_fingerprint(samples: npt.NDArray[np.generic], labels: npt.NDArray[np.generic]) -> str:
    """SHA-256 (hex) of the training records as loaded: shape, dtype and bytes of both."""
    digest = hashlib.sha256(b"securefed/records/v1")
    for array in (samples, labels):
        contiguous = np.ascontiguousarray(array)
        digest.update(f"{contiguous.dtype.str}{contiguous.shape}".encode())
        digest.update(contiguous.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Participation:
    """One participation's charges on the records (a run's method, or a deployment agent)."""

    run_id: str
    method: str
    party: str
    released: bool
    dp: bool
    history: History = ()
    epsilon: float | None = 0.0  # None: unbounded (released without DP)
    started: str = ""
    updated: str = ""

    @property
    def counts(self) -> bool:
        """Whether this participation's spend is composed into the records' epsilon."""
        return self.released


@dataclass(frozen=True)
class Reset:
    """An explicit reset: what was counted before it, and why it was reset."""

    time: str
    reason: str
    epsilon_before: float | None
    participations: tuple[Participation, ...]


@dataclass(frozen=True)
class SpendRecord:
    """The spend record of one tenant's records (module docstring)."""

    tenant: int
    records_sha256: str
    accountant: AccountantKind
    delta: float
    participations: tuple[Participation, ...] = ()
    resets: tuple[Reset, ...] = ()

    def counted(self, *, excluding: str | None = None) -> tuple[Participation, ...]:
        """The released participations since the last reset (except run ``excluding``'s)."""
        return tuple(p for p in self.participations if p.counts and p.run_id != excluding)

    def history(self, *, excluding: str | None = None) -> History | None:
        """The composed history of :meth:`counted`; None when one of them released models
        trained without DP."""
        composed: list[tuple[float, float, int]] = []
        for participation in self.counted(excluding=excluding):
            if participation.epsilon is None:
                return None
            composed.extend(participation.history)
        return tuple(composed)

    def participation(self, run_id: str, method: str) -> Participation | None:
        return next(
            (p for p in self.participations if (p.run_id, p.method) == (run_id, method)), None
        )

    def to_json(self) -> str:
        document = {
            "format": _FORMAT,
            "version": _VERSION,
            "tenant": self.tenant,
            "records_sha256": self.records_sha256,
            "accountant": self.accountant.value,
            "delta": self.delta,
            "participations": [_participation_json(p) for p in self.participations],
            "resets": [
                {
                    "time": r.time,
                    "reason": r.reason,
                    "epsilon_before": r.epsilon_before,
                    "participations": [_participation_json(p) for p in r.participations],
                }
                for r in self.resets
            ],
        }
        return json.dumps(document, indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str) -> SpendRecord:
        """Parse and validate; :class:`ConfigError` naming ``source`` on anything unexpected."""
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source} is not valid JSON: {exc}") from None
        try:
            return _parse(document)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source} is malformed: {exc!r}") from None


def load_spend(records_dir: Path, tenant: int) -> SpendRecord | None:
    """The spend record of ``tenant`` in ``records_dir``, or None if it has none.

    Raises:
        ConfigError: the file is unreadable, too large or malformed (never treated as absent).
    """
    path = spend_path(records_dir, tenant)
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read spend record {path}: {exc.strerror}") from None
    if len(data) > _MAX_BYTES:
        raise ConfigError(f"spend record {path} is larger than {_MAX_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"spend record {path} is not UTF-8") from None
    record = SpendRecord.from_json(text, source=str(path))
    if record.tenant != tenant:
        raise ConfigError(f"spend record {path} is for tenant {record.tenant}, not {tenant}")
    return record


@contextlib.contextmanager
def _locked(records_dir: Path, tenant: int) -> Iterator[None]:
    """An exclusive lock on tenant ``tenant``'s spend record for a read-modify-write."""
    directory = Path(records_dir) / SPEND_DIR
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(directory / f"tenant_{tenant}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(
            f"cannot keep the spend record next to the records in {directory}: {exc.strerror} "
            "(the directory of the records must be writable: the budget follows the records)"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _save(records_dir: Path, record: SpendRecord) -> None:
    write_atomic(spend_path(records_dir, record.tenant), record.to_json().encode(), mode=0o600)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


EpsilonFn = Callable[[History], float]


class SpendAccount:
    """One participation's handle on the records' spend record.

    :meth:`open` only reads: it checks that the record (if any) accounts for these records
    with this accountant and delta, and finds the participation again for a resumed run.
    Nothing is written until the participation spends: :meth:`charge` (DP) and
    :meth:`mark_unbounded` (no DP) register it under an exclusive lock, re-read the record,
    compose every other counted participation with this one's new history, refuse above the
    budget (:class:`PrivacyBudgetExceeded`, nothing written) and otherwise write the record
    durably before returning.
    """

    def __init__(
        self,
        records_dir: Path,
        tenant: int,
        blank: Participation,
        opened: SpendRecord,
        accounting: tuple[AccountantKind, float] | None = None,
    ):
        self.records_dir = Path(records_dir)
        self._accounting = accounting  # (accountant, delta) of a DP participation
        self.tenant = tenant
        self.run_id = blank.run_id
        self.method = blank.method
        self.released = blank.released
        self.records_sha256 = opened.records_sha256
        self._blank = blank
        self._opened = opened

    @classmethod
    def open(
        cls,
        records_dir: Path,
        tenant: int,
        *,
        records_sha256: str,
        run_id: str,
        method: str,
        party: str,
        released: bool,
        accountant: AccountantKind,
        delta: float | None,
    ) -> SpendAccount:
        """The participation (``run_id``, ``method``) of ``party`` on tenant ``tenant``'s
        records; ``delta`` None means training without DP.

        Raises :class:`ConfigError`: the record is unreadable, or is for other records,
        another accountant or another delta; a resumed participation changes party or DP."""
        records_dir = Path(records_dir)
        blank = Participation(
            run_id=run_id, method=method, party=party, released=released, dp=delta is not None
        )
        record = load_spend(records_dir, tenant)
        if record is None:
            record = _empty(tenant, records_sha256, accountant, delta)
        _check_same(record, records_dir, records_sha256, accountant, delta)
        existing = record.participation(run_id, method)
        if existing is not None and (existing.party, existing.dp, existing.released) != (
            party,
            blank.dp,
            released,
        ):
            raise ConfigError(
                f"{spend_path(records_dir, tenant)}: participation {run_id} ({method}) was "
                f"run by {existing.party} (dp={existing.dp}); it cannot continue as another "
                "party or DP setting"
            )
        accounting = None if delta is None else (accountant, delta)
        return cls(records_dir, tenant, blank, record, accounting)

    @property
    def opened(self) -> SpendRecord:
        """The record as it was when this participation opened it."""
        return self._opened

    def own_history(self) -> History:
        """This participation's charged history, from the record (a resumed run continues it)."""
        record = load_spend(self.records_dir, self.tenant)
        found = None if record is None else record.participation(self.run_id, self.method)
        return () if found is None else found.history

    def others(self) -> History | None:
        """The composed history this participation adds to (None: unbounded, no DP)."""
        if not self.released:
            return ()
        record = load_spend(self.records_dir, self.tenant)
        return () if record is None else record.history(excluding=self.run_id)

    def charge(self, history: History, epsilon_of: EpsilonFn, limit: float, what: str) -> float:
        """Make ``history`` this participation's spend if the records stay within ``limit``.

        Returns the records' epsilon after the charge (this participation's own when it is not
        released). Raises :class:`PrivacyBudgetExceeded` (nothing written) or
        :class:`ConfigError` (the record cannot be read or written, or changed meaning)."""
        with _locked(self.records_dir, self.tenant):
            record = self._current()
            others = record.history(excluding=self.run_id) if self.released else ()
            if others is None:
                raise PrivacyBudgetExceeded(
                    f"{what} refused: models trained on these records without DP were released "
                    f"({spend_path(self.records_dir, self.tenant)}); no DP guarantee is left"
                )
            after = epsilon_of((*others, *history))
            if after > limit:
                current = record.participation(self.run_id, self.method)
                before = epsilon_of((*others, *(() if current is None else current.history)))
                raise PrivacyBudgetExceeded(
                    f"{what} refused: the records' epsilon would rise from {before:.6g} to "
                    f"{after:.6g}, above the budget {limit:g} (earlier participations on the "
                    f"same records count: {spend_path(self.records_dir, self.tenant)}); nothing "
                    "was charged, trained or released"
                )
            self._update(record, history=history, epsilon=after)
        return after

    def mark_unbounded(self) -> None:
        """Record, before a model trained without DP is released, that the records' epsilon is
        now unbounded (a no-op for a participation whose models stay inside)."""
        if not self.released:
            return
        with _locked(self.records_dir, self.tenant):
            record = self._current()
            current = record.participation(self.run_id, self.method)
            if current is None or current.epsilon is not None:
                self._update(record, history=(), epsilon=None)

    def _current(self) -> SpendRecord:
        """The record now (under the lock), still for the records this account opened."""
        record = load_spend(self.records_dir, self.tenant)
        if record is None:
            if self._opened.participations or self._opened.resets:
                raise ConfigError(
                    f"{spend_path(self.records_dir, self.tenant)} disappeared during the run; "
                    "nothing was charged or trained"
                )
            return self._opened
        if record.records_sha256 != self.records_sha256:
            raise ConfigError(
                f"{spend_path(self.records_dir, self.tenant)} changed to other records during "
                "the run; nothing was charged or trained"
            )
        return record

    def _update(self, record: SpendRecord, *, history: History, epsilon: float | None) -> None:
        if self._accounting is not None and not any(p.dp for p in record.counted()):
            # the first DP participation counted (after a reset, or after releases without
            # DP only) sets the accounting the others must compose under
            accountant, delta = self._accounting
            record = dataclasses.replace(record, accountant=accountant, delta=delta)
        now = _now()
        key = (self.run_id, self.method)
        participations = record.participations
        if record.participation(*key) is None:
            participations = (*participations, dataclasses.replace(self._blank, started=now))
        updated = tuple(
            dataclasses.replace(p, history=history, epsilon=epsilon, updated=now)
            if (p.run_id, p.method) == key
            else p
            for p in participations
        )
        _save(self.records_dir, dataclasses.replace(record, participations=updated))


def _empty(
    tenant: int, records_sha256: str, accountant: AccountantKind, delta: float | None
) -> SpendRecord:
    return SpendRecord(
        tenant=tenant,
        records_sha256=records_sha256,
        accountant=accountant,
        delta=1e-5 if delta is None else delta,
    )


def _check_same(
    record: SpendRecord,
    records_dir: Path,
    records_sha256: str,
    accountant: AccountantKind,
    delta: float | None,
) -> None:
    path = spend_path(records_dir, record.tenant)
    if record.records_sha256 != records_sha256:
        raise ConfigError(
            f"{path} accounts for other records (SHA-256 {record.records_sha256[:16]}..., these "
            f"are {records_sha256[:16]}...): tenant {record.tenant}'s training records changed "
            "since it was written. If these are new records, reset explicitly: "
            f"securefed budget reset {records_dir} --tenant {record.tenant} --reason TEXT"
        )
    if delta is None or not record.counted():
        return  # without DP, or nothing counted yet: nothing to compose with
    if record.accountant is not accountant or record.delta != delta:
        raise ConfigError(
            f"{path} accounts with the {record.accountant.value} accountant at delta "
            f"{record.delta:g}; this run asks for {accountant.value} at delta {delta:g}. Spends "
            "compose only under one accountant and delta: use those, or reset explicitly"
        )


def reset_spend(records_dir: Path, tenant: int, *, reason: str) -> Reset | None:
    """Archive the counted participations of ``tenant``'s records with ``reason``; return the
    reset (None when there was no record). The accountant of a later run starts from zero;
    every later run ledgers the reset as a hazard.

    Raises:
        ConfigError: an empty reason, or an unreadable or unwritable record.
    """
    if not reason.strip():
        raise ConfigError("a budget reset needs a reason (--reason)")
    with _locked(Path(records_dir), tenant):
        record = load_spend(Path(records_dir), tenant)
        if record is None:
            return None
        epsilon = spent_epsilon(record)
        reset = Reset(
            time=_now(),
            reason=reason.strip()[:500],
            epsilon_before=epsilon,
            participations=record.participations,
        )
        _save(
            Path(records_dir),
            dataclasses.replace(record, participations=(), resets=(*record.resets, reset)),
        )
    return reset


def spent_epsilon(record: SpendRecord) -> float | None:
    """The records' epsilon now (None: unbounded): the composed history's epsilon."""
    from securefed.dp.accounting import epsilon_for  # noqa: PLC0415 - opacus import is heavy

    history = record.history()
    if history is None:
        return None
    return epsilon_for(record.accountant, history, record.delta)


# -- parsing ---------------------------------------------------------------------------------


def _participation_json(p: Participation) -> dict[str, Any]:
    return {
        "run_id": p.run_id,
        "method": p.method,
        "party": p.party,
        "released": p.released,
        "dp": p.dp,
        "history": [list(entry) for entry in p.history],
        "epsilon": p.epsilon,
        "started": p.started,
        "updated": p.updated,
    }


def _text(value: Any, what: str, *, limit: int = 600) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError(f"{what} must be a string of at most {limit} characters")
    return value


def _positive(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{what} must be finite and positive")
    return number


def _history(value: Any) -> History:
    if not isinstance(value, list):
        raise TypeError("history must be a list")
    entries = []
    for entry in value:
        if not isinstance(entry, list) or len(entry) != 3:
            raise ValueError(f"bad history entry {entry!r}")
        steps = entry[2]
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"bad step count {steps!r}")
        entries.append((_positive(entry[0], "sigma"), _positive(entry[1], "sample rate"), steps))
    return tuple(entries)


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be true or false")
    return value


def _parse_participation(value: Any) -> Participation:
    if not isinstance(value, dict):
        raise TypeError("a participation must be an object")
    epsilon = value["epsilon"]
    if epsilon is not None and (
        isinstance(epsilon, bool)
        or not isinstance(epsilon, int | float)
        or not math.isfinite(epsilon)
        or epsilon < 0
    ):
        raise ValueError(f"bad epsilon {epsilon!r}")
    return Participation(
        run_id=_text(value["run_id"], "run_id", limit=200),
        method=_text(value["method"], "method", limit=50),
        party=_text(value["party"], "party", limit=200),
        released=_flag(value["released"], "released"),
        dp=_flag(value["dp"], "dp"),
        history=_history(value["history"]),
        epsilon=None if epsilon is None else float(epsilon),
        started=_text(value["started"], "started", limit=40),
        updated=_text(value["updated"], "updated", limit=40),
    )


def _parse(document: Any) -> SpendRecord:
    if not isinstance(document, dict):
        raise TypeError("top level must be an object")
    if document.get("format") != _FORMAT or document.get("version") != _VERSION:
        raise ValueError(f"not a {_FORMAT} version {_VERSION} document")
    tenant = document["tenant"]
    if isinstance(tenant, bool) or not isinstance(tenant, int) or tenant < 0:
        raise ValueError(f"bad tenant {tenant!r}")
    digest = _text(document["records_sha256"], "records_sha256", limit=64)
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError("records_sha256 must be 64 lowercase hex digits")
    participations = document["participations"]
    resets = document["resets"]
    if not isinstance(participations, list) or not isinstance(resets, list):
        raise TypeError("participations and resets must be lists")
    parsed_resets = []
    for reset in resets:
        if not isinstance(reset, dict):
            raise TypeError("a reset must be an object")
        before = reset["epsilon_before"]
        parsed_resets.append(
            Reset(
                time=_text(reset["time"], "time", limit=40),
                reason=_text(reset["reason"], "reason"),
                epsilon_before=None if before is None else float(_positive_or_zero(before)),
                participations=tuple(_parse_participation(p) for p in reset["participations"]),
            )
        )
    return SpendRecord(
        tenant=tenant,
        records_sha256=digest,
        accountant=AccountantKind(document["accountant"]),
        delta=_positive(document["delta"], "delta"),
        participations=tuple(_parse_participation(p) for p in participations),
        resets=tuple(parsed_resets),
    )


def _positive_or_zero(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"bad epsilon {value!r}")
    if value < 0:
        raise ValueError(f"bad epsilon {value!r}")
    return float(value)


def describe(record: SpendRecord) -> str:
    """One line: the records' epsilon and the participations it counts."""
    epsilon = spent_epsilon(record)
    shown = "unbounded (models released without DP)" if epsilon is None else f"{epsilon:.4g}"
    counted: Sequence[Participation] = record.counted()
    runs = ", ".join(f"{p.method} run {p.run_id[:8]}" for p in counted) or "none"
    return f"tenant {record.tenant}: epsilon {shown} at delta {record.delta:g} spent by {runs}"
