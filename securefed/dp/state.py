"""The persisted accountant state of one institution: JSON, written atomically, never pickle.

File ``dp_accountant.json`` in the client's state directory::

    {
      "format": "securefed-dp-accountant", "version": 1,
      "accountant": "prv", "noise_multiplier": 1.12, "sample_rate": 0.19393939393939394,
      "steps_per_round": 5, "delta": 1e-05, "target_epsilon": 3.0, "max_grad_norm": 1.0,
      "opacus_version": "1.6.0",
      "history": [[1.12, 0.19393939393939394, 10]],
      "charges": [{"round": 1, "steps": 5, "epsilon": 1.02, "mechanism": "dp-sgd"}, ...],
      "statistic_noise_multiplier": null
    }

``statistic_noise_multiplier`` is the sigma of the planned similarity-statistic release (null if
none is planned); its charge is a history entry ``[sigma, 1.0, 1]`` and a charge with
``"mechanism": "gaussian-statistic"``. Files written before these keys existed load unchanged.

``history`` is the Opacus accountant history (``state_dict()["history"]``); ``charges`` lists
every charged round in order (a retried round appears twice: both runs drew noise). Floats are
written with ``repr`` precision, so a reloaded history gives bit-identical epsilons. The file is
replaced as a whole (temporary file in the same directory, flush, fsync, ``os.replace``, fsync
of the directory): after a crash it holds the old or the new state, never a torn one.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securefed.dp.accounting import History, extend_history
from securefed.dp.config import AccountantKind
from securefed.errors import ConfigError
from securefed.files import write_atomic

__all__ = ["STATE_FILE", "AccountantState", "Charge", "load_state", "save_state"]

STATE_FILE = "dp_accountant.json"
#: ``Charge.mechanism`` of a training round and of the similarity statistic's release.
TRAINING_MECHANISM = "dp-sgd"
STATISTIC_MECHANISM = "gaussian-statistic"
_FORMAT = "securefed-dp-accountant"
_VERSION = 1


@dataclass(frozen=True)
class Charge:
    """One charged round: its number, its steps and the cumulative epsilon after it.
    ``mechanism`` is ``"dp-sgd"`` for training, ``"gaussian-statistic"`` for the statistic."""

    round: int
    steps: int
    epsilon: float
    mechanism: str = TRAINING_MECHANISM


@dataclass(frozen=True)
class AccountantState:
    """Everything needed to continue accounting after a restart (see module docstring)."""

    accountant: AccountantKind
    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    delta: float
    target_epsilon: float
    max_grad_norm: float
    opacus_version: str
    history: History = ()
    charges: tuple[Charge, ...] = ()
    statistic_noise_multiplier: float | None = None

    @property
    def total_steps(self) -> int:
        return sum(steps for _, _, steps in self.history)

    def charged(self, round_: int, steps: int, epsilon: float) -> AccountantState:
        """This state with ``steps`` more steps at the configured sigma and q, for ``round_``."""
        history = extend_history(self.history, self.noise_multiplier, self.sample_rate, steps)
        charge = Charge(round=round_, steps=steps, epsilon=epsilon)
        return dataclasses.replace(self, history=history, charges=(*self.charges, charge))

    def charged_statistic(self, round_: int, epsilon: float) -> AccountantState:
        """This state with the similarity statistic's Gaussian release (sigma
        ``statistic_noise_multiplier``, every record once) charged for ``round_``."""
        sigma = self.statistic_noise_multiplier
        if sigma is None:
            raise ConfigError("no similarity statistic was planned for this participation")
        history = extend_history(self.history, sigma, 1.0, 1)
        charge = Charge(round=round_, steps=1, epsilon=epsilon, mechanism=STATISTIC_MECHANISM)
        return dataclasses.replace(self, history=history, charges=(*self.charges, charge))

    def to_json(self) -> str:
        document = {
            "format": _FORMAT,
            "version": _VERSION,
            "accountant": self.accountant.value,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps_per_round": self.steps_per_round,
            "delta": self.delta,
            "target_epsilon": self.target_epsilon,
            "max_grad_norm": self.max_grad_norm,
            "opacus_version": self.opacus_version,
            "history": [list(entry) for entry in self.history],
            "charges": [dataclasses.asdict(charge) for charge in self.charges],
            "statistic_noise_multiplier": self.statistic_noise_multiplier,
        }
        return json.dumps(document, indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str = "accountant state") -> AccountantState:
        """Parse and validate; raises :class:`ConfigError` on anything unexpected."""
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source} is not valid JSON: {exc}") from None
        try:
            state = _parse(document)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source} is malformed: {exc!r}") from None
        if sum(c.steps for c in state.charges) != state.total_steps:
            raise ConfigError(f"{source} is inconsistent: charged steps != history steps")
        return state


def _number(value: Any, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"expected a finite positive number, got {value!r}")
    return value


def _count(value: Any, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"expected an integer >= {minimum}, got {value!r}")
    return value


def _parse(document: Any) -> AccountantState:
    if not isinstance(document, dict):
        raise TypeError("top level must be an object")
    if document.get("format") != _FORMAT or document.get("version") != _VERSION:
        raise ValueError(f"not a {_FORMAT} version {_VERSION} document")
    history: list[tuple[float, float, int]] = []
    for entry in document["history"]:
        if not isinstance(entry, list) or len(entry) != 3:
            raise ValueError(f"bad history entry {entry!r}")
        history.append((_number(entry[0]), _number(entry[1]), _count(entry[2])))
    charges = tuple(
        Charge(
            round=_count(c["round"], minimum=0),
            steps=_count(c["steps"]),
            epsilon=_number(c["epsilon"], positive=False),
            mechanism=_mechanism(c.get("mechanism", TRAINING_MECHANISM)),
        )
        for c in document["charges"]
    )
    statistic_sigma = document.get("statistic_noise_multiplier")
    if not isinstance(document["opacus_version"], str):
        raise TypeError("opacus_version must be a string")
    return AccountantState(
        accountant=AccountantKind(document["accountant"]),
        noise_multiplier=_number(document["noise_multiplier"]),
        sample_rate=_number(document["sample_rate"]),
        steps_per_round=_count(document["steps_per_round"]),
        delta=_number(document["delta"]),
        target_epsilon=_number(document["target_epsilon"]),
        max_grad_norm=_number(document["max_grad_norm"]),
        opacus_version=document["opacus_version"],
        history=tuple(history),
        charges=charges,
        statistic_noise_multiplier=None if statistic_sigma is None else _number(statistic_sigma),
    )


def _mechanism(value: Any) -> str:
    if value not in (TRAINING_MECHANISM, STATISTIC_MECHANISM):
        raise ValueError(f"unknown charge mechanism {value!r}")
    return str(value)


def load_state(state_dir: Path) -> AccountantState | None:
    """The state saved in ``state_dir``, or ``None`` if there is none. Never resets silently:
    an unreadable or malformed file raises :class:`ConfigError`."""
    path = state_dir / STATE_FILE
    if not path.exists():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read accountant state {path}: {exc}") from None
    return AccountantState.from_json(text, source=str(path))


def save_state(state_dir: Path, state: AccountantState) -> None:
    """Atomically replace ``state_dir/dp_accountant.json`` with ``state`` (durable on return;
    mode 0600 in a directory created 0700)."""
    path = state_dir / STATE_FILE
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot write accountant state {path}: {exc.strerror}") from None
    write_atomic(path, state.to_json().encode("utf-8"), mode=0o600)
