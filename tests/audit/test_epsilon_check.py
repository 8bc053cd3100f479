"""securefed.audit.epsilon_check and the ε verdicts of ``verify_run``: each party's ε recomputed
from its signed sigma, q and steps by Google's PLD accountant, independently of the ε it recorded.

The lies are written the way a dishonest party (or whoever holds every key) would write them:
:func:`reseal` changes one payload and then re-signs every ledger of the run from that entry on,
checkpoints included, so the chains, signatures and cross-ledger checks all hold and only the
number lies. Real DP runs (the parties' own Opacus accountant) are in tests/test_cli_run.py.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant

from securefed.audit import EventType, LedgerEntry, verify_path, verify_run
from securefed.audit.anchor import make_anchor, verify_anchored
from securefed.audit.entry import GENESIS_HASH
from securefed.audit.epsilon_check import (
    TOLERANCE,
    PartyEpsilon,
    accountant_name,
    check_party,
    compose,
    pld_epsilon,
)
from securefed.audit.verify import (
    EXIT_EPSILON_UNDERSTATED,
    EXIT_OVER_BUDGET,
    VerifyStatus,
)
from tests.audit import Run, build_run

Payload = dict[str, Any]

# build_run: sigma 1.1, q 0.01, 100 steps a round, delta 1e-5; bank-2 misses round 2.
PLD_400_STEPS = 0.9761  # dp-accounting 0.6.0, value discretisation 1e-4


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return build_run(tmp_path)


def reseal(run: Run, actor: str, seq: int, change: Callable[[Payload], None]) -> None:
    """Change the payload of ``actor``'s entry ``seq`` and re-sign the whole run consistently:
    every later entry of that ledger gets its new ``prev_hash``, and every checkpoint of every
    party that records a changed head records the new hash -- as whoever holds all the keys
    (here: the fixture's) could do. The verifier then finds every chain intact."""
    ledgers = {a: [json.loads(line) for line in run.lines(a)] for a in run.keys}
    change(ledgers[actor][seq]["payload"])
    renamed: dict[str, str] = {GENESIS_HASH: GENESIS_HASH}
    done = dict.fromkeys(ledgers, 0)
    rewritten: dict[str, list[bytes]] = {a: [] for a in ledgers}
    while any(done[a] < len(ledgers[a]) for a in ledgers):
        progressed = False
        for party, entries in ledgers.items():
            while done[party] < len(entries):
                entry = entries[done[party]]
                payload = entry["payload"]
                if entry["event"] == EventType.CHECKPOINT.value:
                    heads = payload["heads"]
                    if any(h["hash"] not in renamed for h in heads.values()):
                        break  # another party's entry it names is not re-signed yet
                    for head in heads.values():
                        head["hash"] = renamed[head["hash"]]
                fresh = LedgerEntry.create(
                    seq=entry["seq"],
                    time=entry["time"],
                    actor=party,
                    event=EventType(entry["event"]),
                    payload=payload,
                    prev_hash=renamed[entry["prev_hash"]],
                    signing_key=run.keys[party],
                )
                renamed[entry["hash"]] = fresh.hash
                rewritten[party].append(fresh.to_line())
                done[party] += 1
                progressed = True
        assert progressed, "checkpoints that name each other"
    for party, lines in rewritten.items():
        run.write_lines(party, lines)


def _spend_seqs(run: Run, actor: str) -> list[int]:
    return [
        seq
        for seq, line in enumerate(run.lines(actor))
        if json.loads(line)["event"] == EventType.ROUND_SPEND.value
    ]


def _budget_seq(run: Run, actor: str) -> int:
    events = [json.loads(line)["event"] for line in run.lines(actor)]
    return events.index(EventType.BUDGET_CONFIGURED.value)


# --- the accountant ---------------------------------------------------------------------------


def test_pld_epsilon_is_dp_accountings_pld_within_its_discretisation() -> None:
    direct = pld_privacy_accountant.PLDAccountant()  # the library's defaults
    direct.compose(dp_event.PoissonSampledDpEvent(0.01, dp_event.GaussianDpEvent(1.0)), 1000)
    ours = pld_epsilon(((1.0, 0.01, 1000),), 1e-5)
    assert direct.get_epsilon(1e-5) == pytest.approx(1.8282, abs=2e-3)
    assert ours == pytest.approx(direct.get_epsilon(1e-5), rel=1e-3)
    assert ours >= direct.get_epsilon(1e-5)  # coarser and pessimistic: never below it
    assert pld_epsilon((), 1e-5) == 0.0
    assert pld_epsilon(((0.0, 0.5, 3),), 1e-5) == math.inf


def test_a_sample_rate_of_one_is_the_plain_gaussian_mechanism() -> None:
    direct = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-3)
    direct.compose(dp_event.GaussianDpEvent(3.0), 1)
    assert pld_epsilon(((3.0, 1.0, 1),), 1e-5) == pytest.approx(direct.get_epsilon(1e-5))


def test_the_accountant_is_named_with_its_version() -> None:
    assert accountant_name() == "dp-accounting 0.6.0 PLD"


# --- a clean run ------------------------------------------------------------------------------


def test_an_honest_run_is_intact_with_every_partys_epsilon_recomputed(run: Run) -> None:
    result = verify_run(run.run_dir)
    assert result.status is VerifyStatus.INTACT
    checks = {c.party: c for c in result.epsilon}
    assert sorted(checks) == ["bank-0", "bank-1", "bank-2"]
    assert checks["bank-0"].recomputed == pytest.approx(PLD_400_STEPS, abs=2e-3)
    assert checks["bank-0"].history == ((1.1, 0.01, 400),)  # four rounds merged
    assert checks["bank-2"].steps == 300
    assert checks["bank-0"].budget == 8.0
    assert all(c.verdict == "consistent" for c in checks.values())


def test_the_check_of_one_ledger_alone(run: Run) -> None:
    result = verify_path(run.path("bank-1"))
    (check,) = result.epsilon
    assert (check.party, check.recorded, check.file) == ("bank-1", 2.5, "bank-1.jsonl")
    assert result.status is VerifyStatus.INTACT


# --- lies that only a number tells ------------------------------------------------------------


def test_an_understated_epsilon_resigned_is_epsilon_understated(run: Run) -> None:
    last = _spend_seqs(run, "bank-1")[-1]
    reseal(run, "bank-1", last, lambda p: p.update(epsilon=0.5))
    result = verify_run(run.run_dir)
    assert result.ok  # every chain, signature and checkpoint holds: only the number lies
    assert result.status is VerifyStatus.EPSILON_UNDERSTATED
    assert result.exit_code == EXIT_EPSILON_UNDERSTATED == 6
    (lie,) = result.understated
    assert (lie.party, lie.seq, lie.recorded) == ("bank-1", last, 0.5)
    assert lie.recomputed == pytest.approx(PLD_400_STEPS, abs=2e-3)
    summary = result.summary()
    assert summary.startswith(f"EPSILON_UNDERSTATED: ledgers/bank-1.jsonl (seq {last}): bank-1 ")
    assert "recorded ε 0.5 after round 4" in summary
    assert "sigma 1.1, q 0.01 and 400 steps give ε 0.976" in summary
    assert "49% lower, more than the 2% allowed" in summary


def test_an_epsilon_just_inside_the_tolerance_is_not_flagged(run: Run) -> None:
    last = _spend_seqs(run, "bank-0")[-1]
    inside = round(pld_epsilon(((1.1, 0.01, 400),), 1e-5) * (1 - TOLERANCE / 2), 6)
    reseal(run, "bank-0", last, lambda p: p.update(epsilon=inside))
    assert verify_run(run.run_dir).status is VerifyStatus.INTACT


def test_fewer_steps_than_trained_is_a_lie_the_steps_do_not_tell(run: Run) -> None:
    """What the check cannot see: a party that signs fewer steps than it took. The recorded ε
    is then consistent with the (false) parameters; nothing here contradicts it."""
    for seq in _spend_seqs(run, "bank-0"):
        reseal(run, "bank-0", seq, lambda p: p.update(steps=1, epsilon=0.4))
    assert verify_run(run.run_dir).status is VerifyStatus.INTACT


def test_an_epsilon_above_the_budget_is_over_budget(run: Run) -> None:
    reseal(run, "bank-2", _budget_seq(run, "bank-2"), lambda p: p.update(target_epsilon=2.0))
    result = verify_run(run.run_dir)
    assert result.status is VerifyStatus.OVER_BUDGET
    assert result.exit_code == EXIT_OVER_BUDGET == 7
    (over,) = result.over_budget
    assert (over.party, over.recorded, over.budget) == ("bank-2", 3.0, 2.0)  # by its own claim
    assert result.summary().endswith("; its budget is ε 2")


def test_a_party_under_its_budget_only_by_understating_is_both(run: Run) -> None:
    """bank-0 claims 0.5 against a budget of 0.8, but its parameters give 0.976: understated
    (the verdict) and over budget (in its check); it is counted once, as understated."""
    reseal(run, "bank-0", _budget_seq(run, "bank-0"), lambda p: p.update(target_epsilon=0.8))
    reseal(run, "bank-0", _spend_seqs(run, "bank-0")[-1], lambda p: p.update(epsilon=0.5))
    result = verify_run(run.run_dir)
    assert result.status is VerifyStatus.EPSILON_UNDERSTATED
    (check,) = result.understated
    assert check.over_budget
    assert result.over_budget == ()
    assert "; its budget is ε 0.8" in result.summary()
    party = result.to_dict()["epsilon"]["parties"][0]
    assert (party["verdict"], party["understated"], party["over_budget"]) == (
        "understated",
        True,
        True,
    )


def test_understated_wins_over_over_budget_and_tampering_over_both(run: Run) -> None:
    reseal(run, "bank-1", _spend_seqs(run, "bank-1")[-1], lambda p: p.update(epsilon=0.1))
    reseal(run, "bank-2", _budget_seq(run, "bank-2"), lambda p: p.update(target_epsilon=1.0))
    result = verify_run(run.run_dir)
    assert result.status is VerifyStatus.EPSILON_UNDERSTATED
    assert [c.party for c in result.over_budget] == ["bank-2"]
    assert "over-budget: ledgers/bank-2.jsonl" in result.describe()
    lines = run.lines("bank-0")
    budget = _budget_seq(run, "bank-0")
    lines[budget] = lines[budget].replace(b'"sample_rate":0.01', b'"sample_rate":0.02')
    run.write_lines("bank-0", lines)
    tampered = verify_run(run.run_dir)
    assert tampered.status is VerifyStatus.TAMPERED
    assert "bank-0" in tampered.unchecked  # a damaged ledger's claims are not checked


def test_an_unknown_mechanism_is_not_recomputed_and_says_why(run: Run) -> None:
    seq = _spend_seqs(run, "bank-0")[0]
    reseal(run, "bank-0", seq, lambda p: p.update(mechanism="laplace"))
    result = verify_run(run.run_dir)
    check = next(c for c in result.epsilon if c.party == "bank-0")
    assert check.recomputed is None
    assert check.verdict == "unchecked"
    assert check.reason is not None
    assert "mechanism 'laplace'" in check.reason
    assert result.status is VerifyStatus.INTACT
    assert "not recomputed: bank-0 (round.spend at seq" in result.describe()


def test_no_noise_is_an_unbounded_epsilon(run: Run) -> None:
    seq = _spend_seqs(run, "bank-0")[-1]
    reseal(run, "bank-0", seq, lambda p: p.update(noise_multiplier=0.0))
    result = verify_run(run.run_dir)
    assert result.status is VerifyStatus.EPSILON_UNDERSTATED
    assert "give ε unbounded" in result.summary()
    assert result.to_dict()["epsilon"]["parties"][0]["recomputed"] == "inf"


# --- composition over several trainings of the same records ------------------------------------


def _check(party: str, records: str, history: tuple[tuple[float, float, int], ...]) -> PartyEpsilon:
    return PartyEpsilon(
        party=party,
        file=f"ledgers/{party}.jsonl",
        seq=9,
        round=4,
        recorded=1.0,
        recomputed=pld_epsilon(history, 1e-5),
        delta=1e-5,
        budget=8.0,
        prior=0.0,
        records_sha256=records,
        history=history,
    )


def test_compose_adds_the_histories_of_the_same_records_only() -> None:
    once = ((1.1, 0.01, 400),)
    composed = compose(
        {
            "this run": [_check("bank-0", "aa", once), _check("bank-1", "bb", once)],
            "fedavg": [_check("bank-0", "aa", once), _check("bank-1", "cc", once)],
            "local": [_check("bank-0", "aa", once)],
        }
    )
    (bank0,) = composed  # bank-1's baseline trained other records: not composed, not listed
    assert bank0.runs == ("this run", "fedavg", "local")
    assert bank0.epsilon == pytest.approx(pld_epsilon(((1.1, 0.01, 1200),), 1e-5))
    assert bank0.epsilon < 3 * pld_epsilon(once, 1e-5)  # tighter than adding the epsilons
    assert not bank0.above_budget


def test_a_run_with_a_baseline_reports_the_composed_epsilon_without_a_verdict(
    run: Run, tmp_path: Path
) -> None:
    baseline = build_run(tmp_path / "other").run_dir  # another roster, the same parameters
    shutil.copytree(baseline, run.run_dir / "baselines" / "fedavg")
    result = verify_run(run.run_dir)
    assert result.status is VerifyStatus.INTACT
    assert result.baselines == (("fedavg", "INTACT"),)
    assert [c.party for c in result.composed] == ["bank-0", "bank-1", "bank-2"]
    bank0 = result.composed[0]
    assert bank0.runs == ("this run", "fedavg")
    assert bank0.epsilon == pytest.approx(pld_epsilon(((1.1, 0.01, 800),), 1e-5))
    assert "composed: 3 institutions' records were also trained by the baselines" in (
        result.describe()
    )
    # a tampered baseline is named and not composed; this run's verdict does not change
    ledger = run.run_dir / "baselines" / "fedavg" / "ledgers" / "bank-0.jsonl"
    ledger.write_bytes(ledger.read_bytes().replace(b'"steps":100', b'"steps":1', 1))
    result = verify_run(run.run_dir)
    assert result.status is VerifyStatus.INTACT
    assert result.composed == ()
    assert "baselines/fedavg is TAMPERED: its trainings are not composed" in result.describe()


def test_check_party_without_spends_is_none(run: Run) -> None:
    assert check_party("server", "ledgers/server.jsonl", ()) is None


def test_an_understated_run_can_still_be_anchored_as_evidence(run: Run) -> None:
    reseal(run, "bank-1", _spend_seqs(run, "bank-1")[-1], lambda p: p.update(epsilon=0.5))
    anchor = make_anchor(run.run_dir)  # the chains hold: the anchor pins the signed lie
    result = verify_anchored(run.run_dir, anchor)
    assert result.status is VerifyStatus.EPSILON_UNDERSTATED
    assert result.problems == ()
