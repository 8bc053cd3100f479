"""The run configuration: one TOML file (``securefed run --config run.toml``), validated.

Schema (every key optional unless marked; see docs/run-config.md for the full description)::

    name = "my-run"                 # run directory runs/<name>/ unless --out is given
    mode = "group"                  # local | fedavg | fedamp | heurfedamp | group
    rounds = 15
    secure = true                   # false: plaintext aggregation (comparison only)
    seed = 0                        # simulation seed (data order, init, dither)
    baselines = ["local", "fedavg"] # extra runs on the same split, same budget and compute
    dropout_rate = 0.0              # simulated dropouts: per client and round, at a random phase
    value_range = 8.0               # secure aggregation accepts model weights with |w| <= this

    [data]
    directory = "path/in/seed/layout"   # OR source + partition keys below
    source = "bundled"                  # bundled digits | a seed-layout dir | an .npz file
    tenants = 12
    groups = 3
    scheme = "concept-shift"
    partition_seed = 0
    samples_per_tenant = 400            # optional: cap per tenant, train + test (default: all)
    model = "cnn"                       # cnn | mlp | logistic
    hidden = [64, 32]                   # model = "mlp" only: hidden layer widths (default 64, 32)
    parties = ["acme-bank", ...]        # optional: the institutions' party ids in tenant order,
                                        #   one per tenant (default bank-0, bank-1, ...)
    standardize = "federation"          # imported tables: scale numeric features by the
                                        #   federation-wide mean and deviation, computed by
                                        #   secure aggregation (default "none"; tabular.md)

    [training]
    lr = 0.5
    batch_size = 64
    local_epochs = 1
    proximal_lambda = 0.0               # FedAMP's lambda/alpha (fedamp / heurfedamp only)
    class_weights = [1.0, 50.0]         # optional: one loss weight per class (label k: entry k)

    [dp]                                # omit the table for no DP
    target_epsilon = 8.0
    delta = 1e-5
    max_grad_norm = 1.0
    accountant = "prv"                  # prv | rdp
    noise_multiplier = 1.1              # optional: fixed explicitly instead of from the target
    statistic_epsilon = 2.0             # similarity = "statistic" or standardize = "federation":
                                        #   that release's share of target_epsilon
                                        #   (default target_epsilon / 4)

    [personalize]
    segments = "declared"               # group mode: "declared" (federation.json, or a list)
                                        #   or "learned" (from the first round's sketches)
    groups = 3                          # group mode, learned: number of groups
    self_weight = 0.5                   # xi_ii (heurfedamp; group mode default: 1/|group|)
    alpha = 0.5                         # fedamp
    sigma_scale = 1.0                   # fedamp
    temperature = 5.0                   # heurfedamp
    sketch_dim = 256
    similarity = "model"                # what learned similarities use: "model" (the models'
                                        #   sketches) or "statistic" (a DP statistic of each
                                        #   institution's data, released once; see docs/dp.md)
    statistic_dim = 8                   # statistic: projection size per class
    colluders = 1                       # n_C: clients that may collude with the server (the
                                        #   exposure rule's coalition size; group mode: members
                                        #   of one group)
    min_exposure = 0.5                  # rho: the least exposure every party keeps (fedamp.md)
    history_rounds = 3                  # W: earlier rounds whose releases count (fedamp.md)
    sketches_per_seed = 400             # sketch rounds under one S_0 (default: ceil(d / k))
    max_seed_deals = 8                  # sketch seeds a party accepts in a run (fedamp.md)

Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from securefed.data import Scheme
from securefed.errors import ConfigError
from securefed.personalize.modes import PersonalizationMode
from securefed.personalize.statistic import MAX_STATISTIC_DIM
from securefed.secagg.policy import MAX_HISTORY_ROUNDS
from securefed.secagg.roster import PARTY_ID_RULE, is_party_id

E = TypeVar("E", bound=Enum)

#: The simulation's server (coordinator) party id, which no institution may take.
SERVER_PARTY = "server"

__all__ = [
    "DPSettings",
    "DataConfig",
    "ModelName",
    "PersonalizationMode",
    "PersonalizeConfig",
    "RunConfig",
    "SegmentSource",
    "SimilaritySource",
    "Standardization",
    "TrainingSettings",
    "check_parties",
    "load_run_config",
    "parse_run_config",
]


class SegmentSource(Enum):
    """Where group mode's partition comes from."""

    DECLARED = "declared"  # each institution states its segment (federation.json or a list)
    LEARNED = "learned"  # chosen from the first round's secret sketches


class SimilaritySource(Enum):
    """What learned similarities (fedamp, heurfedamp, group mode with learned segments) are
    computed from."""

    MODEL = "model"  # the secret sketches of the models, every round
    STATISTIC = "statistic"  # the sketches of each institution's DP similarity statistic


class Standardization(Enum):
    """``[data] standardize``: how numeric features of imported tables are scaled."""

    NONE = "none"  # as imported
    FEDERATION = "federation"  # by federation-wide statistics from secure aggregation


class ModelName(Enum):
    """``[data] model``: which model every institution trains (the same values as
    :class:`securefed.models.ModelKind`, which builds it; this module stays torch-free)."""

    CNN = "cnn"  # 1x28x28 images
    MLP = "mlp"  # any record shape, flattened; hidden layers from [data] hidden
    LOGISTIC = "logistic"  # any record shape, flattened; binary: one logit (a scorecard)


@dataclass(frozen=True, slots=True)
class DataConfig:
    """``[data]``. ``hidden``: the MLP's hidden layer widths (None: the default (64, 32));
    only with ``model = "mlp"``."""

    directory: str | None = None
    source: str = "bundled"
    tenants: int = 12
    groups: int = 3
    scheme: Scheme = Scheme.CONCEPT_SHIFT
    partition_seed: int = 0
    samples_per_tenant: int | None = None
    model: ModelName = ModelName.CNN
    hidden: tuple[int, ...] | None = None
    parties: tuple[str, ...] | None = None  # party ids in tenant order (None: bank-<i>)
    schema_sha256: str | None = None  # tabular data: the schema digest every party must have
    standardize: Standardization | None = None  # None: "none" (kept out of sha256)


@dataclass(frozen=True, slots=True)
class TrainingSettings:
    """``[training]``. ``class_weights``: one fixed loss weight per class (None: unweighted);
    its length must equal the data's number of classes, checked when the data is read."""

    lr: float = 0.5
    batch_size: int = 64
    local_epochs: int = 1
    proximal_lambda: float = 0.0
    class_weights: tuple[float, ...] | None = None


@dataclass(frozen=True, slots=True)
class DPSettings:
    target_epsilon: float = 8.0
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    accountant: str = "prv"
    noise_multiplier: float | None = None
    statistic_epsilon: float | None = None


@dataclass(frozen=True, slots=True)
class PersonalizeConfig:
    segments: SegmentSource | tuple[int, ...] = SegmentSource.DECLARED
    groups: int = 3
    self_weight: float | None = None
    alpha: float = 0.5
    sigma_scale: float = 1.0
    temperature: float = 5.0
    sketch_dim: int = 256
    similarity: SimilaritySource = SimilaritySource.MODEL
    statistic_dim: int = 8
    colluders: int | None = None  # None: RoundParams' default (kept out of config_sha256)
    min_exposure: float | None = None
    history_rounds: int | None = None  # None: RoundParams' default (kept out of sha256)
    sketches_per_seed: int | None = None  # None: ceil(d / sketch_dim) (kept out of sha256)
    max_seed_deals: int | None = None  # None: RoundParams' default (kept out of sha256)


@dataclass(frozen=True, slots=True)
class RunConfig:
    """A validated run configuration. ``to_dict`` round-trips through :func:`parse_run_config`."""

    name: str = "run"
    mode: PersonalizationMode = PersonalizationMode.GROUP
    rounds: int = 15
    secure: bool = True
    seed: int = 0
    baselines: tuple[PersonalizationMode, ...] = ()
    dropout_rate: float = 0.0
    value_range: float = 8.0
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    dp: DPSettings | None = field(default_factory=DPSettings)
    personalize: PersonalizeConfig = field(default_factory=PersonalizeConfig)

    @property
    def learns_similarity(self) -> bool:
        """Whether this run's mode learns similarities (attention, or learned segments)."""
        if self.mode in (PersonalizationMode.FEDAMP, PersonalizationMode.HEURFEDAMP):
            return True
        return (
            self.mode is PersonalizationMode.GROUP
            and self.personalize.segments is SegmentSource.LEARNED
        )

    @property
    def uses_statistic(self) -> bool:
        """Whether institutions release the DP similarity statistic in this run."""
        return self.learns_similarity and (
            self.personalize.similarity is SimilaritySource.STATISTIC
        )

    @property
    def standardizes(self) -> bool:
        """Whether the institutions compute federation-wide statistics before round 1."""
        return self.data.standardize is Standardization.FEDERATION

    @property
    def statistic_epsilon(self) -> float | None:
        """The part of each institution's budget its one statistic release before round 1
        spends -- the similarity statistic or the federation-wide statistics -- (None: no such
        release or no DP): ``dp.statistic_epsilon``, by default a quarter of the target."""
        if not (self.uses_statistic or self.standardizes) or self.dp is None:
            return None
        if self.dp.statistic_epsilon is not None:
            return self.dp.statistic_epsilon
        return self.dp.target_epsilon / 4

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML-able values (enums as their strings, no None-valued keys)."""
        plain: dict[str, Any] = _plain(dataclasses.asdict(self))
        return plain

    def sha256(self) -> str:
        """SHA-256 of the canonical JSON of :meth:`to_dict` (recorded as ``config_sha256``)."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_toml(self) -> str:
        """The configuration as TOML that :func:`parse_run_config` reads back unchanged."""
        plain = self.to_dict()
        lines = [f"{k} = {_toml_value(v)}" for k, v in plain.items() if not isinstance(v, dict)]
        for table, values in plain.items():
            if isinstance(values, dict):
                lines.append(f"\n[{table}]")
                lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
        return "\n".join(lines) + "\n"


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {value!r} as TOML")


def load_run_config(path: str | Path) -> RunConfig:
    """Read and validate a run configuration file.

    Raises:
        ConfigError: unreadable file, invalid TOML, unknown keys, wrong types or values (the
            message names the key).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the run configuration ({exc.strerror})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    try:
        return parse_run_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse_run_config(raw: Mapping[str, Any]) -> RunConfig:
    """Validate a parsed TOML mapping into a :class:`RunConfig` (see the module docstring)."""
    top = _Table(raw, "")
    config = RunConfig(
        name=top.string("name", "run"),
        mode=top.enum("mode", PersonalizationMode, PersonalizationMode.GROUP),
        rounds=top.integer("rounds", 15, minimum=1),
        secure=top.boolean("secure", True),
        seed=top.integer("seed", 0, minimum=0),
        baselines=tuple(
            _enum_value(PersonalizationMode, b, "baselines") for b in top.strings("baselines", [])
        ),
        dropout_rate=top.number("dropout_rate", 0.0),
        value_range=top.number("value_range", 8.0, positive=True),
        data=_data(top.table("data")),
        training=_training(top.table("training")),
        dp=_dp(top.table("dp")) if "dp" in raw else None,
        personalize=_personalize(top.table("personalize")),
    )
    top.finish()
    if config.dropout_rate >= 1:
        raise ConfigError(f"dropout_rate must be in [0, 1), got {config.dropout_rate}")
    if config.mode in config.baselines:
        raise ConfigError(f"baselines repeat the main mode {config.mode.value!r}")
    if config.standardizes and config.uses_statistic:
        raise ConfigError(
            'data.standardize = "federation" and personalize.similarity = "statistic" each '
            "release a statistic before round 1; one run supports one of them"
        )
    if config.standardizes and config.data.model is ModelName.CNN:
        raise ConfigError(
            'data.standardize = "federation" is for tables (model "logistic" or "mlp")'
        )
    if not config.name or "/" in config.name or config.name.startswith("."):
        raise ConfigError(f"name must be a plain directory name, got {config.name!r}")
    return config


def _data(table: _Table) -> DataConfig:
    out = DataConfig(
        directory=table.optional_string("directory"),
        source=table.string("source", "bundled"),
        tenants=table.integer("tenants", 12, minimum=3),
        groups=table.integer("groups", 3, minimum=1),
        scheme=table.enum("scheme", Scheme, Scheme.CONCEPT_SHIFT),
        partition_seed=table.integer("partition_seed", 0, minimum=0),
        samples_per_tenant=None
        if table.get("samples_per_tenant") is None
        else table.integer("samples_per_tenant", 0, minimum=2),
        model=table.enum("model", ModelName, ModelName.CNN),
        hidden=None if table.get("hidden") is None else tuple(table.widths("hidden")),
        parties=None if table.get("parties") is None else tuple(table.strings("parties", [])),
        schema_sha256=table.optional_string("schema_sha256"),
        standardize=_standardization(table),
    )
    table.finish()
    digest = out.schema_sha256
    if digest is not None and not (
        len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
    ):
        raise ConfigError(
            "data.schema_sha256 must be the 64 lowercase hex digits that `securefed data import` "
            f"prints as the schema sha256, got {digest!r}"
        )
    if out.parties is not None:
        check_parties(out.parties, None if out.directory is not None else out.tenants)
    if out.hidden is not None and out.model is not ModelName.MLP:
        raise ConfigError(
            f'data.hidden applies to model = "mlp" only, not to model = "{out.model.value}"'
        )
    return out


def _standardization(table: _Table) -> Standardization | None:
    if table.get("standardize") is None:
        return None
    value = table.enum("standardize", Standardization, Standardization.NONE)
    return None if value is Standardization.NONE else value


def check_parties(parties: Sequence[str], tenants: int | None) -> None:
    """Raise :class:`ConfigError` naming ``data.parties`` unless ``parties`` are valid party ids
    (the roster's rule), unique, not the server's id ``server``, and -- when ``tenants`` is
    given -- exactly one per tenant."""
    if tenants is not None and len(parties) != tenants:
        raise ConfigError(
            f"data.parties must name exactly one party per tenant ({tenants}), got {len(parties)}"
        )
    for index, party in enumerate(parties):
        if not is_party_id(party):
            raise ConfigError(f"data.parties[{index}] {party!r} must be {PARTY_ID_RULE}")
        if party == SERVER_PARTY:
            raise ConfigError(f"data.parties[{index}] {party!r} is the server's party id")
    repeated = sorted({p for p in parties if parties.count(p) > 1})
    if repeated:
        raise ConfigError(f"data.parties must be unique, {', '.join(repeated)} repeated")


def _training(table: _Table) -> TrainingSettings:
    out = TrainingSettings(
        lr=table.number("lr", 0.5, positive=True),
        batch_size=table.integer("batch_size", 64, minimum=1),
        local_epochs=table.integer("local_epochs", 1, minimum=1),
        proximal_lambda=table.number("proximal_lambda", 0.0),
        class_weights=None
        if table.get("class_weights") is None
        else tuple(table.weights("class_weights")),
    )
    table.finish()
    return out


def _dp(table: _Table) -> DPSettings:
    noise = table.get("noise_multiplier")
    statistic = table.get("statistic_epsilon")
    out = DPSettings(
        target_epsilon=table.number("target_epsilon", 8.0, positive=True),
        delta=table.number("delta", 1e-5, positive=True),
        max_grad_norm=table.number("max_grad_norm", 1.0, positive=True),
        accountant=table.choice("accountant", ("prv", "rdp"), "prv"),
        noise_multiplier=None if noise is None else table.number("noise_multiplier", 1.0, True),
        statistic_epsilon=None
        if statistic is None
        else table.number("statistic_epsilon", 2.0, positive=True),
    )
    table.finish()
    if out.statistic_epsilon is not None and out.statistic_epsilon >= out.target_epsilon:
        raise ConfigError(
            "dp.statistic_epsilon must be below dp.target_epsilon: the rest pays for training"
        )
    if not out.delta < 1:
        raise ConfigError("dp.delta must be < 1 (and much smaller than 1/records per institution)")
    return out


def _personalize(table: _Table) -> PersonalizeConfig:
    raw_segments = table.get("segments", "declared")
    segments: SegmentSource | tuple[int, ...]
    if isinstance(raw_segments, list):
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in raw_segments):
            raise ConfigError("personalize.segments must be a list of integer segment labels")
        segments = tuple(raw_segments)
    else:
        segments = _enum_value(SegmentSource, raw_segments, "personalize.segments")
    self_weight = table.get("self_weight")
    out = PersonalizeConfig(
        segments=segments,
        groups=table.integer("groups", 3, minimum=1),
        self_weight=None if self_weight is None else table.number("self_weight", 0.5),
        alpha=table.number("alpha", 0.5, positive=True),
        sigma_scale=table.number("sigma_scale", 1.0, positive=True),
        temperature=table.number("temperature", 5.0, positive=True),
        sketch_dim=table.integer("sketch_dim", 256, minimum=8),
        similarity=table.enum("similarity", SimilaritySource, SimilaritySource.MODEL),
        statistic_dim=table.integer("statistic_dim", 8, minimum=1),
        colluders=None
        if table.get("colluders") is None
        else table.integer("colluders", 1, minimum=0),
        min_exposure=None
        if table.get("min_exposure") is None
        else table.number("min_exposure", 0.5),
        history_rounds=None
        if table.get("history_rounds") is None
        else table.integer("history_rounds", 3, minimum=1),
        sketches_per_seed=None
        if table.get("sketches_per_seed") is None
        else table.integer("sketches_per_seed", 1, minimum=1),
        max_seed_deals=None
        if table.get("max_seed_deals") is None
        else table.integer("max_seed_deals", 8, minimum=1),
    )
    table.finish()
    if out.min_exposure is not None and not 0.0 <= out.min_exposure < 1.0:
        raise ConfigError(
            "personalize.min_exposure must be in [0, 1): the least relative error a coalition's "
            "best estimate of a party's model must keep (1 would forbid any personalization)"
        )
    if out.history_rounds is not None and out.history_rounds > MAX_HISTORY_ROUNDS:
        raise ConfigError(f"personalize.history_rounds must be at most {MAX_HISTORY_ROUNDS}")
    if out.statistic_dim > MAX_STATISTIC_DIM:
        raise ConfigError(f"personalize.statistic_dim must be at most {MAX_STATISTIC_DIM}")
    if out.self_weight is not None and not 0.0 <= out.self_weight <= 1.0:
        raise ConfigError("personalize.self_weight must be in [0, 1]")
    return out


def _enum_value(kind: type[E], value: object, key: str) -> E:
    try:
        return kind(value)
    except ValueError:
        known = ", ".join(repr(m.value) for m in kind)
        raise ConfigError(f"{key} = {value!r} is not one of {known}") from None


class _Table:
    """Typed reads from one TOML table; :meth:`finish` rejects keys nobody read."""

    def __init__(self, raw: Mapping[str, Any], prefix: str) -> None:
        if not isinstance(raw, Mapping):
            raise ConfigError(f"[{prefix}] must be a table")
        self._raw, self._prefix, self._seen = raw, prefix, set[str]()

    def _key(self, key: str) -> str:
        return f"{self._prefix}.{key}" if self._prefix else key

    def get(self, key: str, default: Any = None) -> Any:
        self._seen.add(key)
        return self._raw.get(key, default)

    def table(self, key: str) -> _Table:
        return _Table(self.get(key, {}), self._key(key))

    def string(self, key: str, default: str) -> str:
        value = self.get(key, default)
        if not isinstance(value, str):
            raise ConfigError(f"{self._key(key)} must be a string, got {value!r}")
        return value

    def optional_string(self, key: str) -> str | None:
        value = self.get(key)
        return None if value is None else self.string(key, "")

    def strings(self, key: str, default: list[str]) -> list[str]:
        value = self.get(key, default)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{self._key(key)} must be a list of strings, got {value!r}")
        return value

    def widths(self, key: str) -> list[int]:
        """A non-empty list of integers >= 1 (layer widths)."""
        value = self.get(key)
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
        ):
            raise ConfigError(
                f"{self._key(key)} must be a non-empty list of integers >= 1, got {value!r}"
            )
        return value

    def weights(self, key: str) -> list[float]:
        """A list of at least two finite numbers > 0 (one per class)."""
        value = self.get(key)
        if not isinstance(value, list) or len(value) < 2:
            raise ConfigError(
                f"{self._key(key)} must list one weight per class (at least 2), got {value!r}"
            )
        for index, weight in enumerate(value):
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise ConfigError(f"{self._key(key)}[{index}] must be a number, got {weight!r}")
            if not (math.isfinite(weight) and weight > 0):
                raise ConfigError(
                    f"{self._key(key)}[{index}] must be finite and > 0, got {weight!r}"
                )
        return [float(w) for w in value]

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{self._key(key)} must be true or false, got {value!r}")
        return value

    def integer(self, key: str, default: int, *, minimum: int) -> int:
        value = self.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(f"{self._key(key)} must be an integer >= {minimum}, got {value!r}")
        return value

    def number(self, key: str, default: float, positive: bool = False) -> float:
        value = self.get(key, default)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"{self._key(key)} must be a number, got {value!r}")
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{self._key(key)} must be a finite non-negative number")
        if positive and value == 0:
            raise ConfigError(f"{self._key(key)} must be > 0")
        return float(value)

    def choice(self, key: str, options: tuple[str, ...], default: str) -> str:
        value = self.string(key, default)
        if value not in options:
            raise ConfigError(f"{self._key(key)} must be one of {options}, got {value!r}")
        return value

    def enum(self, key: str, kind: type[E], default: E) -> E:
        return _enum_value(kind, self.get(key, default.value), self._key(key))

    def finish(self) -> None:
        unknown = sorted(set(self._raw) - self._seen)
        if unknown:
            where = f"[{self._prefix}]" if self._prefix else "the top level"
            raise ConfigError(f"unknown key(s) in {where}: {', '.join(unknown)}")
