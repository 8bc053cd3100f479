"""The accountant state survives a crash after the charge and a restart: epsilon continues, never
resets, and a restart cannot change the privacy parameters."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from securefed.dp import (
    STATE_FILE,
    AccountantKind,
    AccountantState,
    DPConfig,
    PrivateTrainer,
    TrainingConfig,
    epsilon_for,
    load_state,
)
from securefed.errors import ConfigError, PrivacyBudgetExceeded
from tests.dp.helpers import dp_config, make_trainer, params_of


class SimulatedCrash(Exception):
    pass


def _crash_after_first_step(trainer: PrivateTrainer, monkeypatch: pytest.MonkeyPatch) -> None:
    stepper = trainer._stepper
    real_step = stepper.step
    calls = []

    def step(x: torch.Tensor, y: torch.Tensor, proximal: object) -> None:
        calls.append(len(x))
        if len(calls) > 1:
            raise SimulatedCrash("power cut in the middle of local training")
        real_step(x, y, proximal)  # type: ignore[arg-type]

    monkeypatch.setattr(stepper, "step", step)


def test_a_crash_after_the_charge_leaves_the_round_charged_and_a_restart_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dp = dp_config()
    first = make_trainer(tmp_path, dp=dp)
    first.train_round(1)
    eps1 = first.epsilon()
    _crash_after_first_step(first, monkeypatch)
    with pytest.raises(SimulatedCrash):
        first.train_round(2)
    # On disk before anything else: round 2 was charged although it never finished.
    saved = load_state(tmp_path)
    assert saved is not None
    assert [c.round for c in saved.charges] == [1, 2]
    assert saved.history == ((1.0, 0.1, 20),)
    two_rounds = epsilon_for(AccountantKind.RDP, ((1.0, 0.1, 20),), 1e-5)
    assert saved.charges[-1].epsilon == two_rounds > eps1  # type: ignore[operator]

    # "Restart": a new process would build a fresh model and a fresh trainer on the same dir.
    restarted = make_trainer(tmp_path, dp=dp)
    assert restarted.epsilon() == two_rounds  # continues, never resets to 0
    assert restarted.charges == saved.charges
    spend = restarted.train_round(2)  # the retried round is charged again: both drew noise
    assert spend is not None
    assert spend.epsilon == epsilon_for(AccountantKind.RDP, ((1.0, 0.1, 30),), 1e-5)
    assert [c.round for c in restarted.charges] == [1, 2, 2]
    again = make_trainer(tmp_path, dp=dp)
    assert again.epsilon() == spend.epsilon


def test_the_state_is_saved_before_the_first_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = make_trainer(tmp_path, dp=dp_config())
    seen: list[int] = []
    real_step = trainer._stepper.step

    def step(x: torch.Tensor, y: torch.Tensor, proximal: object) -> None:
        if not seen:
            state = load_state(tmp_path)
            assert state is not None
            seen.append(len(state.charges))
        real_step(x, y, proximal)  # type: ignore[arg-type]

    monkeypatch.setattr(trainer._stepper, "step", step)
    trainer.train_round(1)
    assert seen == [1]


CHANGES = {
    "delta": ({"delta": 1e-6}, None, "delta"),
    "accountant": ({"accountant": AccountantKind.PRV}, None, "accountant"),
    "target epsilon": ({"target_epsilon": 9.0}, None, "target epsilon"),
    "explicit sigma": ({"noise_multiplier": 1.5}, None, "noise multiplier"),
    "clipping norm": ({"max_grad_norm": 2.0}, None, "max_grad_norm"),
    "sample rate": ({}, TrainingConfig(lr=0.1, batch_size=20), "sample rate"),
    "steps per round": ({}, TrainingConfig(lr=0.1, batch_size=10, local_epochs=2), "steps"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_restart_cannot_change_the_privacy_parameters(tmp_path: Path, change: str) -> None:
    make_trainer(tmp_path, dp=dp_config()).train_round(1)
    before = (tmp_path / STATE_FILE).read_bytes()
    overrides, training, word = CHANGES[change]
    with pytest.raises(ConfigError, match=f"saved {word}.*cannot change its privacy parameters"):
        make_trainer(tmp_path, dp=dp_config(**overrides), training=training)
    assert (tmp_path / STATE_FILE).read_bytes() == before


def test_a_restart_without_dp_is_refused(tmp_path: Path) -> None:
    make_trainer(tmp_path, dp=dp_config()).train_round(1)
    with pytest.raises(ConfigError, match="trained with DP before"):
        make_trainer(tmp_path, dp=None)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not valid JSON"),
        ('{"format": "something-else", "version": 1}', "malformed"),
        ("", "not valid JSON"),
    ],
    ids=["garbage", "foreign", "empty"],
)
def test_an_unreadable_state_is_an_error_never_a_reset(
    tmp_path: Path, content: str, match: str
) -> None:
    (tmp_path / STATE_FILE).write_text(content)
    with pytest.raises(ConfigError, match=match):
        make_trainer(tmp_path, dp=dp_config())
    assert (tmp_path / STATE_FILE).read_text() == content


def test_an_inconsistent_state_is_refused(tmp_path: Path) -> None:
    make_trainer(tmp_path, dp=dp_config()).train_round(1)
    document = json.loads((tmp_path / STATE_FILE).read_text())
    document["history"] = [[1.0, 0.1, 5]]  # 5 steps in the history, 10 charged
    (tmp_path / STATE_FILE).write_text(json.dumps(document))
    with pytest.raises(ConfigError, match="charged steps != history steps"):
        make_trainer(tmp_path, dp=dp_config())


def test_the_state_round_trips_bit_for_bit(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, dp=dp_config(target_epsilon=100.0, noise_multiplier=2.0 / 3.0))
    trainer.train_round(0)
    trainer.train_round(1)
    text = (tmp_path / STATE_FILE).read_text()
    state = AccountantState.from_json(text)
    assert state.to_json() == text
    assert state.noise_multiplier == 2.0 / 3.0
    assert epsilon_for(AccountantKind.RDP, state.history, state.delta) == trainer.epsilon()


def test_a_failed_save_charges_and_trains_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = make_trainer(tmp_path, dp=dp_config())
    trainer.train_round(1)
    before = (tmp_path / STATE_FILE).read_bytes()
    params = params_of(trainer)

    def full_disk(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)  # the rename step of the atomic write
    with pytest.raises(ConfigError, match=r"cannot write .*dp_accountant\.json.*No space left"):
        trainer.train_round(2)
    assert (tmp_path / STATE_FILE).read_bytes() == before  # old state intact, not torn
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]  # no temp file left
    np.testing.assert_array_equal(params_of(trainer), params)
    assert [c.round for c in trainer.charges] == [1]


def test_construction_persists_sigma_before_any_round(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, dp=dp_config(noise_multiplier=1.25))
    state = load_state(tmp_path)
    assert state is not None
    assert state.noise_multiplier == trainer.noise_multiplier == 1.25
    assert state.history == ()
    assert state.charges == ()
    assert trainer.epsilon() == 0.0


def test_delta_must_be_much_smaller_than_one_over_n(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"much smaller than 1/n"):
        make_trainer(tmp_path, n=100, dp=DPConfig(target_epsilon=1.0, delta=0.01))


def test_on_charge_sees_a_durable_charge_before_training_and_never_a_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_round = epsilon_for(AccountantKind.RDP, ((1.0, 0.1, 10),), 1e-5)
    trainer = make_trainer(tmp_path, dp=dp_config(target_epsilon=one_round))
    events: list[str] = []
    real_step = trainer._stepper.step

    def step(x: torch.Tensor, y: torch.Tensor, proximal: object) -> None:
        events.append("step")
        real_step(x, y, proximal)  # type: ignore[arg-type]

    def on_charge(spend: object) -> None:
        saved = load_state(tmp_path)
        assert saved is not None
        events.append(f"charge {len(saved.charges)}")

    monkeypatch.setattr(trainer._stepper, "step", step)
    spend = trainer.train_round(1, on_charge=on_charge)
    assert spend is not None
    assert events[0] == "charge 1"
    assert events[1:] == ["step"] * 10
    events.clear()
    with pytest.raises(PrivacyBudgetExceeded):
        trainer.train_round(2, on_charge=on_charge)
    assert events == []


def test_a_failing_on_charge_leaves_the_round_charged_and_untrained(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, dp=dp_config())
    params = params_of(trainer)

    def ledger_down(spend: object) -> None:
        raise SimulatedCrash("ledger unavailable")

    with pytest.raises(SimulatedCrash):
        trainer.train_round(1, on_charge=ledger_down)
    np.testing.assert_array_equal(params_of(trainer), params)
    assert [c.round for c in trainer.charges] == [1]
    assert make_trainer(tmp_path, dp=dp_config()).epsilon() == trainer.epsilon() > 0
