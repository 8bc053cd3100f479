"""The records' spend record (securefed/dp/spend.py): composition across participations, locked
charges, resets, and a strict decoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securefed.dp import AccountantKind, epsilon_for
from securefed.dp.spend import (
    SpendAccount,
    SpendRecord,
    load_spend,
    records_fingerprint,
    reset_spend,
    spend_path,
    spent_epsilon,
)
from securefed.errors import ConfigError, PrivacyBudgetExceeded

KIND = AccountantKind.RDP
DELTA = 1e-5
DIGEST = records_fingerprint(np.zeros((4, 2), np.float32), np.zeros(4, np.int64))


def _epsilon(history: tuple[tuple[float, float, int], ...]) -> float:
    return epsilon_for(KIND, history, DELTA)


def _open(directory: Path, run: str, **changes: object) -> SpendAccount:
    arguments: dict[str, object] = {
        "records_sha256": DIGEST,
        "run_id": run,
        "method": "fedavg",
        "party": "bank-0",
        "released": True,
        "accountant": KIND,
        "delta": DELTA,
    }
    arguments.update(changes)
    return SpendAccount.open(directory, 0, **arguments)  # type: ignore[arg-type]


STEP = (1.0, 0.1, 10)


def test_opening_writes_nothing_and_the_first_charge_registers(tmp_path: Path) -> None:
    account = _open(tmp_path, "a")
    assert not (tmp_path / "securefed-spend").exists()
    after = account.charge((STEP,), _epsilon, 100.0, "round 1")
    record = load_spend(tmp_path, 0)
    assert record is not None
    (participation,) = record.participations
    assert participation.history == (STEP,)
    assert participation.epsilon == after == pytest.approx(_epsilon((STEP,)))
    assert spend_path(tmp_path, 0).stat().st_mode & 0o077 == 0


def test_participations_compose_and_the_budget_holds_across_them(tmp_path: Path) -> None:
    first, second = _open(tmp_path, "a"), _open(tmp_path, "b")
    first.charge((STEP,), _epsilon, 100.0, "a1")
    assert second.others() == (STEP,)
    after = second.charge((STEP,), _epsilon, 100.0, "b1")
    assert after == pytest.approx(_epsilon((STEP, STEP)))
    limit = after + 1e-6  # one more step of either run would exceed it
    with pytest.raises(PrivacyBudgetExceeded, match="earlier participations"):
        first.charge((STEP, STEP), _epsilon, limit, "a2")
    record = load_spend(tmp_path, 0)
    assert record is not None
    assert [p.history for p in record.participations] == [(STEP,), (STEP,)]  # nothing written
    assert spent_epsilon(record) == pytest.approx(after)


def test_methods_of_one_run_are_planned_against_other_runs_only(tmp_path: Path) -> None:
    main = _open(tmp_path, "run", method="group")
    baseline = _open(tmp_path, "run", method="fedavg")
    main.charge((STEP,), _epsilon, 100.0, "main")
    assert baseline.others() == ()  # the sibling method of the same run is not its prior
    baseline.charge((STEP,), _epsilon, 100.0, "baseline")
    record = load_spend(tmp_path, 0)
    assert record is not None
    assert spent_epsilon(record) == pytest.approx(_epsilon((STEP, STEP)))  # both count


def test_a_local_participation_costs_nothing_outside(tmp_path: Path) -> None:
    _open(tmp_path, "local", method="local", released=False).charge(
        (STEP,), _epsilon, 100.0, "local"
    )
    record = load_spend(tmp_path, 0)
    assert record is not None
    assert record.counted() == ()
    assert spent_epsilon(record) == 0.0
    assert _open(tmp_path, "next").others() == ()


def test_a_release_without_dp_makes_the_records_unbounded(tmp_path: Path) -> None:
    plain = _open(tmp_path, "plain", delta=None)
    assert not (tmp_path / "securefed-spend").exists()
    plain.mark_unbounded()
    record = load_spend(tmp_path, 0)
    assert record is not None
    assert spent_epsilon(record) is None
    later = _open(tmp_path, "later")
    assert later.others() is None
    with pytest.raises(PrivacyBudgetExceeded, match="without DP"):
        later.charge((STEP,), _epsilon, 100.0, "round 1")


def test_a_reset_archives_and_starts_again(tmp_path: Path) -> None:
    _open(tmp_path, "a").charge((STEP,), _epsilon, 100.0, "a1")
    with pytest.raises(ConfigError, match="reason"):
        reset_spend(tmp_path, 0, reason="  ")
    reset = reset_spend(tmp_path, 0, reason="new consent")
    assert reset is not None
    assert reset.epsilon_before == pytest.approx(_epsilon((STEP,)))
    record = load_spend(tmp_path, 0)
    assert record is not None
    assert record.participations == ()
    assert record.resets[0].participations[0].run_id == "a"
    assert spent_epsilon(record) == 0.0
    assert reset_spend(tmp_path, 1, reason="none there") is None


def test_other_records_another_accountant_or_delta_are_refused(tmp_path: Path) -> None:
    _open(tmp_path, "a").charge((STEP,), _epsilon, 100.0, "a1")
    other = records_fingerprint(np.ones((4, 2), np.float32), np.zeros(4, np.int64))
    with pytest.raises(ConfigError, match="accounts for other records"):
        _open(tmp_path, "b", records_sha256=other)
    with pytest.raises(ConfigError, match="accountant"):
        _open(tmp_path, "b", accountant=AccountantKind.PRV)
    with pytest.raises(ConfigError, match="delta"):
        _open(tmp_path, "b", delta=1e-6)
    with pytest.raises(ConfigError, match="another party"):
        _open(tmp_path, "a", party="bank-9")


def test_the_fingerprint_covers_values_shapes_and_dtypes() -> None:
    x, y = np.zeros((4, 2), np.float32), np.zeros(4, np.int64)
    base = records_fingerprint(x, y)
    assert records_fingerprint(x.reshape(2, 4), y) != base
    assert records_fingerprint(x.astype(np.float64), y) != base
    changed = y.copy()
    changed[0] = 1
    assert records_fingerprint(x, changed) != base
    assert records_fingerprint(x.copy(), y.copy()) == base


def test_unreadable_or_oversized_records_are_errors_never_a_fresh_account(
    tmp_path: Path,
) -> None:
    path = spend_path(tmp_path, 0)
    path.parent.mkdir()
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_spend(tmp_path, 0)
    path.write_bytes(b" " * (4 * 1024 * 1024 + 1))
    with pytest.raises(ConfigError, match="larger than"):
        load_spend(tmp_path, 0)
    path.write_text("{}")
    with pytest.raises(ConfigError, match="malformed"):
        _open(tmp_path, "a")


def _valid_document() -> dict[str, object]:
    return json.loads(
        SpendRecord(tenant=0, records_sha256=DIGEST, accountant=KIND, delta=DELTA).to_json()
    )


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(sorted(_valid_document())), value=_JSON)
def test_the_decoder_raises_only_config_errors(key: str, value: object) -> None:
    document = _valid_document()
    document[key] = value
    try:
        record = SpendRecord.from_json(json.dumps(document), source="fuzz")
    except ConfigError:
        return
    assert SpendRecord.from_json(record.to_json(), source="again") == record


def _trainer_with(state: Path, account: SpendAccount) -> object:
    from securefed.dp import DPConfig, PrivateTrainer, TrainingConfig  # noqa: PLC0415
    from securefed.models import mlp  # noqa: PLC0415
    from tests.dp.helpers import CLASSES, FEATURES, blobs  # noqa: PLC0415

    x, y = blobs(100)
    return PrivateTrainer(
        mlp(FEATURES, CLASSES, hidden=(8,), seed=0),
        x,
        y,
        training=TrainingConfig(lr=0.1, batch_size=10),
        dp=DPConfig(target_epsilon=50.0, delta=DELTA, noise_multiplier=1.0, accountant=KIND),
        planned_rounds=5,
        state_dir=state,
        seed=1,
        spend=account,
    )


def test_an_accountant_state_behind_the_spend_record_is_caught_up(tmp_path: Path) -> None:
    """A crash between the two durable writes of a charge (the spend record first) leaves the
    accountant state one charge behind: a restart adopts the spend record's charge."""
    from securefed.dp import PrivateTrainer  # noqa: PLC0415
    from securefed.dp.state import STATE_FILE  # noqa: PLC0415

    state = tmp_path / "state"
    records = tmp_path / "records"
    records.mkdir()
    trainer = _trainer_with(state, _open(records, "run"))
    assert isinstance(trainer, PrivateTrainer)
    trainer.train_round(1)
    behind = (state / STATE_FILE).read_bytes()
    trainer.train_round(2)
    (state / STATE_FILE).write_bytes(behind)  # as if the state's write of round 2 was lost

    restarted = _trainer_with(state, _open(records, "run"))
    assert isinstance(restarted, PrivateTrainer)
    record = load_spend(records, 0)
    assert record is not None
    assert restarted.accountant_state is not None
    assert restarted.accountant_state.history == record.participations[0].history
    assert restarted.epsilon() == pytest.approx(spent_epsilon(record))
    assert [c.round for c in restarted.charges] == [1, 2]


def test_an_accountant_state_that_does_not_continue_its_participation_is_refused(
    tmp_path: Path,
) -> None:
    records = tmp_path / "records"
    records.mkdir()
    short = _trainer_with(tmp_path / "short", _open(records, "short"))
    short.train_round(1)  # type: ignore[attr-defined]
    long = _trainer_with(tmp_path / "long", _open(records, "long"))
    long.train_round(1)  # type: ignore[attr-defined]
    long.train_round(2)  # type: ignore[attr-defined]
    # a state directory ahead of what its participation charged next to the records
    with pytest.raises(ConfigError, match="does not continue the participation"):
        _trainer_with(tmp_path / "long", _open(records, "short"))
    # a participation that charged, whose accountant state is gone
    with pytest.raises(ConfigError, match="accountant state was lost"):
        _trainer_with(tmp_path / "empty", _open(records, "short"))


def test_after_a_reset_the_next_dp_participation_sets_the_accounting(tmp_path: Path) -> None:
    _open(tmp_path, "a").charge((STEP,), _epsilon, 100.0, "a1")
    reset_spend(tmp_path, 0, reason="new records period")
    other = _open(tmp_path, "b", accountant=AccountantKind.PRV, delta=1e-6)  # allowed now
    other.charge((STEP,), lambda h: epsilon_for(AccountantKind.PRV, h, 1e-6), 100.0, "b1")
    record = load_spend(tmp_path, 0)
    assert record is not None
    assert (record.accountant, record.delta) == (AccountantKind.PRV, 1e-6)
    assert spent_epsilon(record) == pytest.approx(epsilon_for(AccountantKind.PRV, (STEP,), 1e-6))
