"""What a run would do, found without running it: ``securefed run --dry-run``.

:func:`plan_run` applies every check that :func:`~securefed.runtime.federated.run_federation`
makes before it trains -- the configuration, the output directory, the data (loaded, or the
source partitioned in memory), the model against the data, the dropout tolerance, the group
sizes of every method, the party names and the budget left on the records -- and then plans
each institution's differential privacy as its trainer would: q = batch_size / n, the DP-SGD
steps per round, sigma for all planned rounds (unless the configuration fixes it) after what
earlier runs spent on the same records, and the ε that projects to (by the run's own Opacus
accountant and, independently, by Google's PLD accountant, as ``securefed audit verify``
recomputes it). With ``estimate``, two rounds of the largest institution are trained on its real
records in a temporary directory (no spend record, no ledger) and the second is timed, for a
rough estimate of the run's training time on this machine at its present load.

Nothing is written: not the output directory, not the records' directory, not the data home.
The same errors as the run itself (:class:`~securefed.errors.ConfigError`).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from securefed.audit.epsilon_check import accountant_name, pld_epsilon
from securefed.dp import AccountantKind, DPConfig, PrivateTrainer, TrainingConfig
from securefed.dp.accounting import History, epsilon_for, noise_multiplier_for
from securefed.dp.spend import load_spend
from securefed.runtime.config import PersonalizationMode, RunConfig
from securefed.runtime.engine.settings import EngineSettings
from securefed.runtime.federated import (
    _check_config,
    _check_records_budget,
    _inputs,
    _new_run_directories,
    check_dropout_tolerance,
    check_model,
    model_spec,
    partial_directory,
    party_ids,
)
from securefed.runtime.tenants import Tenants, peek_run_tenants

__all__ = ["PartyPlan", "RunPlan", "plan_run"]


@dataclass(frozen=True, slots=True)
class PartyPlan:
    """One institution: its records and, with DP, what its trainer would plan."""

    party: str
    tenant: int
    train_records: int
    test_records: int
    segment: int | None
    sample_rate: float | None = None
    steps_per_round: int | None = None
    noise_multiplier: float | None = None
    prior_epsilon: float = 0.0
    projected_epsilon: float | None = None
    projected_epsilon_pld: float | None = None

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class RunPlan:
    """The plan of a run (module docstring). ``composed_epsilon_pld`` is the largest ε of an
    institution's records over every method that trains them (main and baselines), composed by
    the PLD accountant; ``seconds`` the rough training-time estimate (None: not estimated)."""

    config: RunConfig
    out: Path
    data_directory: Path
    copies_data: bool
    parties: tuple[PartyPlan, ...]
    composed_epsilon_pld: float | None
    seconds: float | None

    @property
    def methods(self) -> tuple[PersonalizationMode, ...]:
        return (self.config.mode, *self.config.baselines)

    def to_dict(self) -> dict[str, object]:
        config, dp = self.config, self.config.dp
        return {
            "dry_run": True,
            "name": config.name,
            "out": str(self.out),
            "mode": config.mode.value,
            "secure": config.secure,
            "rounds": config.rounds,
            "baselines": [b.value for b in config.baselines],
            "data_directory": str(self.data_directory),
            "data_copied_into_run": self.copies_data,
            "dp": None
            if dp is None
            else {
                "target_epsilon": dp.target_epsilon,
                "delta": dp.delta,
                "max_grad_norm": dp.max_grad_norm,
                "accountant": dp.accountant,
                "independent_accountant": accountant_name(),
            },
            "parties": [p.to_dict() for p in self.parties],
            "composed_epsilon_pld": self.composed_epsilon_pld,
            "estimated_seconds": None if self.seconds is None else round(self.seconds, 1),
            "written": [],
        }

    def describe(self) -> str:
        """The plan for a person: what would run, where, with which privacy, for how long."""
        config, dp = self.config, self.config.dp
        security = "secure aggregation" if config.secure else "plaintext aggregation"
        baselines = ", ".join(b.value for b in config.baselines) or "none"
        where = (
            f"a copy prepared into {self.data_directory}"
            if self.copies_data
            else str(self.data_directory)
        )
        lines = [
            f"dry run: nothing was written (would write {self.out}, built in "
            f"{partial_directory(self.out)} and renamed at the end)",
            f"{config.mode.value} with {security}, {config.rounds} rounds, "
            f"{len(self.parties)} institutions; baselines: {baselines}",
            f"data: {where}",
        ]
        if dp is None:
            lines.append("differential privacy: off (the models released are not private)")
        else:
            lines.append(
                f"differential privacy: ε {dp.target_epsilon:g} at δ {dp.delta:g} per "
                f"institution, clipping norm {dp.max_grad_norm:g}, accountant {dp.accountant} "
                f"(independent check: {accountant_name()})"
            )
        width = max(len("institution"), *(len(p.party) for p in self.parties))
        header = f"  {'institution':<{width}}  {'records':>7}"
        if dp is not None:
            header += (
                f"  {'q':>7}  {'steps/round':>11}  {'sigma':>7}  {'prior ε':>7}  "
                f"{'projected ε':>11}  {'PLD ε':>7}"
            )
        lines.append(header)
        for p in self.parties:
            row = f"  {p.party:<{width}}  {p.train_records:>7}"
            if dp is not None:
                row += (
                    f"  {p.sample_rate or 0:>7.4f}  {p.steps_per_round or 0:>11}  "
                    f"{p.noise_multiplier or 0:>7.4f}  {p.prior_epsilon:>7.3g}  "
                    f"{p.projected_epsilon or 0:>11.4g}  {p.projected_epsilon_pld or 0:>7.4g}"
                )
            lines.append(row)
        if self.composed_epsilon_pld is not None and len(self.methods) > 1:
            lines.append(
                f"every method trains the same records: over all {len(self.methods)} "
                f"({', '.join(m.value for m in self.methods)}) an institution's records reach "
                f"up to ε {self.composed_epsilon_pld:.4g} composed (PLD): a comparison, not a "
                "deployment"
            )
        if self.seconds is not None:
            lines.append(
                f"estimated training time: about {_duration(self.seconds)} on this machine "
                "(a round of the largest institution timed at the present load, scaled to every "
                "round, institution and method; secure aggregation and evaluation add to it)"
            )
        return "\n".join(lines)


def plan_run(
    config: RunConfig, out: str | Path, *, copy_data: bool = False, estimate: bool = True
) -> RunPlan:
    """The plan of ``config`` into ``out`` (module docstring); writes nothing.

    Raises:
        ConfigError, DataFormatError: whatever the run would refuse before training.
    """
    _check_config(config)
    final, partial = _new_run_directories(Path(out))
    copies = copy_data and config.data.directory is None
    data = peek_run_tenants(config.data, partial, copy=copies)
    check_dropout_tolerance(config, len(data.tenants), data.segments)
    check_model(config, data)
    for mode in (config.mode, *config.baselines):
        variant = dataclasses.replace(config, mode=mode, baselines=())
        EngineSettings.from_run_config(variant, parties=len(data.tenants), declared=data.segments)
    fresh = copies or not data.directory.is_dir()  # not prepared yet: nothing spent on it
    if not fresh:
        _check_records_budget(config, data, None)
    parties = _parties(config, data, fresh=fresh)
    composed = _composed(config, parties)
    seconds = _estimate(config, data, parties) if estimate else None
    return RunPlan(
        config=config,
        out=final,
        data_directory=data.directory,
        copies_data=copies,
        parties=parties,
        composed_epsilon_pld=composed,
        seconds=seconds,
    )


def _parties(config: RunConfig, data: Tenants, *, fresh: bool) -> tuple[PartyPlan, ...]:
    ids = party_ids(config, len(data.tenants)) or tuple(
        f"bank-{i}" for i in range(len(data.tenants))
    )
    plans = []
    for position, (tenant, party) in enumerate(zip(data.tenants, ids, strict=True)):
        n = len(tenant.train_y)
        plan = PartyPlan(
            party=party,
            tenant=tenant.index,
            train_records=n,
            test_records=len(tenant.test_y),
            segment=None if data.segments is None else data.segments[position],
        )
        dp = config.dp
        if dp is not None:
            prior = () if fresh else _prior(config, data.directory, tenant.index)
            plan = _private(config, plan, prior)
        plans.append(plan)
    return tuple(plans)


def _prior(config: RunConfig, directory: Path, tenant: int) -> History:
    """What earlier runs spent on the records (released participations), as the trainer
    composes it first; () for a participation that releases nothing."""
    if config.mode is PersonalizationMode.LOCAL:
        return ()
    record = load_spend(directory, tenant)
    history = None if record is None else record.history()
    return history or ()


def _private(config: RunConfig, plan: PartyPlan, prior: History) -> PartyPlan:
    dp = config.dp
    assert dp is not None  # noqa: S101 -- called with DP only
    kind = AccountantKind(dp.accountant)
    batch, n = config.training.batch_size, plan.train_records
    q = min(1.0, batch / n)
    steps = config.training.local_epochs * max(1, n // batch)
    reserved: History = ()
    if config.statistic_epsilon is not None:
        sigma_s = noise_multiplier_for(kind, config.statistic_epsilon, dp.delta, 1.0, 1)
        reserved = ((sigma_s, 1.0, 1),)
    sigma = dp.noise_multiplier
    if sigma is None:
        sigma = noise_multiplier_for(
            kind, dp.target_epsilon, dp.delta, q, config.rounds * steps, prefix=(*prior, *reserved)
        )
    history = (*prior, *reserved, (sigma, q, config.rounds * steps))
    return dataclasses.replace(
        plan,
        sample_rate=q,
        steps_per_round=steps,
        noise_multiplier=sigma,
        prior_epsilon=epsilon_for(kind, prior, dp.delta) if prior else 0.0,
        projected_epsilon=epsilon_for(kind, history, dp.delta),
        projected_epsilon_pld=pld_epsilon(history, dp.delta),
    )


def _composed(config: RunConfig, parties: tuple[PartyPlan, ...]) -> float | None:
    """The largest PLD ε of one institution's records trained by every method of the run."""
    dp = config.dp
    if dp is None or not config.baselines:
        return None
    methods = 1 + len(config.baselines)
    found = []
    for p in parties:
        if p.noise_multiplier is None or p.sample_rate is None or p.steps_per_round is None:
            continue
        history = (
            (p.noise_multiplier, p.sample_rate, methods * config.rounds * p.steps_per_round),
        )
        found.append(pld_epsilon(history, dp.delta))
    return max(found) if found else None


def _estimate(config: RunConfig, data: Tenants, parties: tuple[PartyPlan, ...]) -> float:
    """Seconds: a round of the largest institution timed on its own records (in a temporary
    state directory, no spend record; after one untimed round), scaled by every institution's
    records, every round and every method."""
    position = max(range(len(parties)), key=lambda i: parties[i].train_records)
    tenant = data.tenants[position]
    spec = model_spec(config, data.num_classes, tenant.sample_shape)
    training = TrainingConfig(
        lr=config.training.lr,
        batch_size=config.training.batch_size,
        local_epochs=config.training.local_epochs,
    )
    dp = config.dp
    private = (
        None
        if dp is None
        else DPConfig(  # timing only: the planned sigma, no budget to stop the second round
            target_epsilon=1e6,
            delta=dp.delta,
            max_grad_norm=dp.max_grad_norm,
            noise_multiplier=parties[position].noise_multiplier,
            accountant=AccountantKind(dp.accountant),
        )
    )
    x = _inputs(config, tenant.train_x)
    with tempfile.TemporaryDirectory(prefix="securefed-plan-") as state:
        trainer = PrivateTrainer(
            spec.build(seed=config.seed),
            x,
            torch.from_numpy(tenant.train_y),
            training=training,
            dp=private,
            planned_rounds=max(2, config.rounds),
            state_dir=Path(state),
            seed=config.seed,
        )
        trainer.train_round(1)  # warms up (Opacus hooks, allocations): not timed
        started = time.perf_counter()
        trainer.train_round(2)
        seconds = time.perf_counter() - started
    largest = max(p.train_records for p in parties)
    scale = sum(p.train_records for p in parties) / largest
    return seconds * scale * config.rounds * (1 + len(config.baselines))


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
