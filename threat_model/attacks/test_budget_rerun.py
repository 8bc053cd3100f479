"""Budget rerun: a fresh privacy budget for the same records by training them again elsewhere.

ADVERSARY: an insider at an institution (or an operator following the old advice "choose a new
--out") who wants more useful models than the budget allows. It can start training any number
of times, with any state or run directory; it cannot write the records' directory without that
being the records' own change control (the spend record lives there).

ASSUMPTIONS: one tenant's records, 100 rows, DP-SGD with the RDP accountant at delta 1e-5 and
a budget of epsilon 2 over 2 planned rounds; every model trained is released.

ATTACK: train the planned rounds (spending the budget), then start again in a NEW state
directory -- as after a crash, or with a new ``--out`` -- and train the planned rounds again.
Everything released about the same records is then the composition of both runs.

DEFENCE (expected and measured): with the records' spend record
(:mod:`securefed.dp.spend`, docs/dp.md "The budget follows the records") the second start
finds the first run's spend: its trainer is refused before any step, and the records' composed
epsilon stays within the budget. The weaker variant, kept as a fixture, is the trainer without
a spend record (the budget of a state directory, as before issue 19): the attack gets a fresh
budget and the composed epsilon of what was released ends well above the budget.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from securefed.dp import AccountantKind, DPConfig, PrivateTrainer, TrainingConfig, epsilon_for
from securefed.dp.spend import SpendAccount, load_spend, records_fingerprint, spent_epsilon
from securefed.errors import PrivacyBudgetExceeded
from securefed.models import mlp

BUDGET = 2.0
DELTA = 1e-5
ROUNDS = 2


def _records() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)  # test data only
    labels = torch.randint(0, 3, (100,), generator=generator)
    rows = torch.eye(3, 4)[labels] * 4.0 + torch.randn(100, 4, generator=generator)
    return rows.float(), labels


def _trainer(state: Path, account: SpendAccount | None) -> PrivateTrainer:
    x, y = _records()
    return PrivateTrainer(
        mlp(4, 3, hidden=(8,), seed=0),
        x,
        y,
        training=TrainingConfig(lr=0.1, batch_size=10),
        dp=DPConfig(target_epsilon=BUDGET, delta=DELTA, accountant=AccountantKind.RDP),
        planned_rounds=ROUNDS,
        state_dir=state,
        seed=1,
        spend=account,
    )


def _account(records_dir: Path, run: str) -> SpendAccount:
    x, y = _records()
    return SpendAccount.open(
        records_dir,
        0,
        records_sha256=records_fingerprint(x.numpy(), y.numpy()),
        run_id=run,
        method="fedavg",
        party="bank-0",
        released=True,
        accountant=AccountantKind.RDP,
        delta=DELTA,
    )


def _train_all(trainer: PrivateTrainer) -> None:
    for round_ in range(1, ROUNDS + 1):
        trainer.train_round(round_)


@pytest.fixture
def without_spend_record() -> bool:
    """The weaker variant: the budget is the state directory's (no record next to the data)."""
    return True


def test_a_rerun_in_a_new_directory_gets_a_fresh_budget_without_a_spend_record(
    tmp_path: Path, without_spend_record: bool
) -> None:
    assert without_spend_record
    first = _trainer(tmp_path / "first-run", None)
    _train_all(first)
    second = _trainer(tmp_path / "second-run", None)  # the attack: start again elsewhere
    _train_all(second)
    assert first.accountant_state is not None
    assert second.accountant_state is not None
    released = (*first.accountant_state.history, *second.accountant_state.history)
    composed = epsilon_for(AccountantKind.RDP, released, DELTA)
    assert composed > 1.3 * BUDGET  # the attack succeeds: far above the budget


def test_a_rerun_in_a_new_directory_finds_the_records_spend_and_is_refused(
    tmp_path: Path,
) -> None:
    records = tmp_path / "records"
    records.mkdir()
    _train_all(_trainer(tmp_path / "first-run", _account(records, "a" * 32)))
    with pytest.raises(PrivacyBudgetExceeded, match="already spent"):
        _trainer(tmp_path / "second-run", _account(records, "b" * 32))  # the attack
    record = load_spend(records, 0)
    assert record is not None
    spent = spent_epsilon(record)
    assert spent is not None
    assert spent <= BUDGET + 1e-9  # the defence holds: the records stay within the budget


def test_a_rerun_after_a_partial_run_gets_only_what_is_left(tmp_path: Path) -> None:
    records = tmp_path / "records"
    records.mkdir()
    first = _trainer(tmp_path / "first-run", _account(records, "a" * 32))
    first.train_round(1)  # then the run is killed: one of two rounds spent
    second = _trainer(tmp_path / "second-run", _account(records, "b" * 32))
    _train_all(second)  # planned for what the first run left
    record = load_spend(records, 0)
    assert record is not None
    assert len(record.counted()) == 2
    spent = spent_epsilon(record)
    assert spent is not None
    assert BUDGET - 0.05 < spent <= BUDGET + 1e-9
    assert second.noise_multiplier is not None
    assert first.noise_multiplier is not None
    assert second.noise_multiplier > first.noise_multiplier  # less budget left: more noise
