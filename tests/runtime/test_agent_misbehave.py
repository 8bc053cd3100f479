"""The test agent's ``--misbehave`` (a bank that cheats, for the Flower integration test
tests/integration/test_flower_misbehaviour.py): the spec is parsed strictly, and the same
cheats in one process (the loopback deployment) are caught and ledgered with their evidence."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from securefed.audit import EventType, verify_run
from securefed.audit.entry import parse_entry
from securefed.audit.ledger import ledger_path
from securefed.data import PartitionConfig, Scheme, prepare
from securefed.errors import ConfigError
from securefed.runtime.flower.launch import write_test_parties
from securefed.testing.agent import MisbehaviourKind, MisbehaviourPoint, main
from securefed.testing.loopback import DeploymentFiles, run_loopback


def test_misbehaviour_points_name_a_round_and_a_misbehaviour() -> None:
    assert MisbehaviourPoint.parse("1:bad-dealer") == MisbehaviourPoint(
        1, MisbehaviourKind.BAD_DEALER
    )
    assert MisbehaviourPoint.parse("2:bad-holder") == MisbehaviourPoint(
        2, MisbehaviourKind.BAD_HOLDER
    )
    assert str(MisbehaviourPoint.parse("2:bad-holder")) == "2:bad-holder"
    for bad in (
        "1",
        "bad-dealer",
        "0:bad-dealer",
        "-1:bad-dealer",
        "x:bad-holder",
        "1:bad",
        "1:bad-dealer:mask",
        "",
    ):
        with pytest.raises(ConfigError):
            MisbehaviourPoint.parse(bad)


def test_a_bad_misbehave_spec_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = [
        "--config",
        "c",
        "--roster",
        "r",
        "--key",
        "k",
        "--unsafe-plaintext-key",
        "--party",
        "bank-0",
        "--tenant",
        "0",
        "--num-classes",
        "10",
        "--state",
        str(tmp_path),
        "--misbehave",
        "1:bad-everything",
    ]
    assert main(argv) == 2
    assert "unknown misbehaviour 'bad-everything'" in capsys.readouterr().err


N = 5


def test_loopback_bad_dealer_and_bad_holder(tmp_path: Path) -> None:
    prepare(
        "bundled",
        out=tmp_path / "data",
        config=PartitionConfig(tenants=N, groups=1, scheme=Scheme.IID, samples_per_tenant=40),
    )
    write_test_parties(tmp_path, N)
    (tmp_path / "run.toml").write_text(
        'name = "mb"\nmode = "fedavg"\nrounds = 2\nseed = 3\n[data]\n'
        f'directory = "{tmp_path / "data"}"\n'
        'model = "mlp"\nhidden = [8]\n[training]\nbatch_size = 16\n'
    )
    parties = tuple(f"bank-{i}" for i in range(N))
    files = DeploymentFiles(
        tmp_path / "run.toml",
        tmp_path / "roster.toml",
        tmp_path / "keys",
        tmp_path / "data",
        10,
        parties,
    )
    out = tmp_path / "out"
    metrics = run_loopback(
        files,
        out,
        seed=3,
        misbehave={
            "bank-1": MisbehaviourPoint.parse("1:bad-dealer"),
            "bank-3": MisbehaviourPoint.parse("2:bad-holder"),
        },
    )
    assert [e.completed for e in metrics.history] == [0, N - 1, N]
    lines = ledger_path(out / "coordinator", "server").read_bytes().splitlines()
    server = [parse_entry(line) for line in lines]
    caught = [dict(e.payload) for e in server if e.event is EventType.MISBEHAVIOUR]
    for entry in caught:
        assert (
            out / "coordinator" / "evidence" / f"round-{entry['round']}-bank-{entry['party']}.bin"
        ).exists()
        del entry["evidence_sha256"]
    assert caught == [
        {"round": 1, "party": 1, "kind": "bad-shares", "accuser": 0},
        {"round": 2, "party": 3, "kind": "bad-share-revealed", "accuser": -1},
    ]
    audit = tmp_path / "audit"
    (audit / "ledgers").mkdir(parents=True)
    shutil.copy(files.roster, audit / "roster.toml")
    for ledger in sorted(out.glob("*/**/ledgers/*.jsonl")):
        shutil.copy(ledger, audit / "ledgers" / ledger.name)
    assert verify_run(audit).ok
