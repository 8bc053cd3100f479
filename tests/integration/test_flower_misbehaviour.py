"""Two malicious banks in a real deployment on Flower: a SuperLink and 5 SuperNodes as processes on
127.0.0.1 with TLS, secure FedAvg (sum mode), 2 rounds, DP off (each institution ledgers that as a
hazard), an MLP with one hidden layer of 8, 40 records per institution: the protocol is tested,
not the learning.

The agents are test agents (``python -m securefed.testing.agent``); two of them cheat on their
own signed protocol messages (``--misbehave``, re-signed with their own identity keys):

* ``bank-1`` is a bad dealer in round 1: the DealtShare it sends its lowest-index holder,
  ``bank-0``, carries a mask-key share off its committed polynomial, sealed under the pair's real
  channel key. ``bank-0`` complains with evidence, the server convicts ``bank-1`` and leaves it
  out of round 1 before anything is masked: it releases no update and gets no result in round 1,
  and the other four complete it;
* ``bank-3`` is a bad holder in round 2: the self-seed shares it reveals at unmasking are off
  the dealers' polynomials. The server names it and ignores its shares; the round completes for
  all five (``bank-3``'s input still counts, and every institution gets the same average).

The server's ledger holds exactly those two ``round.misbehaviour`` entries, each naming the file
of signed evidence the coordinator wrote next to it, and all six ledgers verify together. The
same attacks on the in-memory engine: tests/runtime/engine/test_bad_shares.py.

Needs ``securefed[flower]`` (skipped without flwr); run by ``make test-integration``. Every
process is started and stopped by the test.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")

from securefed.audit import EventType, verify_run
from securefed.audit.entry import LedgerEntry, parse_entry
from securefed.audit.ledger import ledger_path
from securefed.data import PartitionConfig, Scheme, prepare
from securefed.models import flat_parameters, load_saved_model
from securefed.runtime.engine.coordinator import EVIDENCE_DIR
from securefed.runtime.flower.deployment import METRICS_FILE, MODEL_FILE
from securefed.runtime.flower.launch import InstitutionSpec, LocalDeployment, write_test_parties
from securefed.secagg.dealing import decode_evidence
from securefed.secagg.roster import Roster
from securefed.secagg.verify import verify_message

N = 5
PARTIES = tuple(f"bank-{i}" for i in range(N))
DEALER, VICTIM, HOLDER = 1, 0, 3  # roster indices: the bad dealer, whom it cheats, the bad holder
MISBEHAVE = {DEALER: "1:bad-dealer", HOLDER: "2:bad-holder"}
TEST_AGENT = (sys.executable, "-m", "securefed.testing.agent")
RUN_TOML = """\
name = "misbehaviour-test"
mode = "fedavg"
rounds = 2
seed = 3

[data]
directory = "{data}"
model = "mlp"
hidden = [8]

[training]
lr = 0.5
batch_size = 16
"""


def _entries(state: Path, actor: str) -> list[LedgerEntry]:
    return [parse_entry(line) for line in ledger_path(state, actor).read_bytes().splitlines()]


def _released(state: Path, party: str) -> list[int]:
    """The rounds whose masked update ``party`` ledgered as released."""
    entries = _entries(state, party)
    return [e.payload["round"] for e in entries if e.event is EventType.UPDATE_RELEASED]


def _checked_evidence(coordinator: Path, roster: Roster, entry: dict[str, Any]) -> None:
    """The signed evidence an entry names is next to the ledgers, private, and verifies."""
    party = PARTIES[entry["party"]]
    path = coordinator / EVIDENCE_DIR / f"round-{entry['round']}-{party}.bin"
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["evidence_sha256"]
    assert path.stat().st_mode & 0o777 == 0o600
    messages = decode_evidence(data)
    assert messages
    for message in messages:
        verify_message(roster, message, session_id=message.session_id, round_=entry["round"])


def _logs(deployment: LocalDeployment) -> str:
    names = ("superlink", "flwr-run", *(f"agent-{PARTIES[i]}" for i in MISBEHAVE))
    return "\n".join(f"--- {name}\n{deployment.log_tail(name)}" for name in names)


def test_a_bad_dealer_is_left_out_and_a_bad_holder_named_on_flower(tmp_path: Path) -> None:
    data = tmp_path / "data"
    prepare(
        "bundled",
        out=data,
        config=PartitionConfig(tenants=N, groups=1, scheme=Scheme.IID, samples_per_tenant=40),
    )
    parties = write_test_parties(tmp_path, N)
    roster, keys = tmp_path / "roster.toml", tmp_path / "keys"
    config = tmp_path / "run.toml"
    config.write_text(RUN_TOML.format(data=data), encoding="utf-8")
    coordinator = tmp_path / "coordinator"
    specs = [
        InstitutionSpec(
            party,
            keys / f"{party}.key",
            data,
            i,
            tmp_path / "nodes" / party,
            ("--misbehave", MISBEHAVE[i]) if i in MISBEHAVE else (),
        )
        for i, party in enumerate(PARTIES)
    ]
    started = time.monotonic()
    with LocalDeployment(
        tmp_path / "flower", config=config, roster=roster, num_classes=10, agent=TEST_AGENT
    ) as deployment:
        deployment.start_superlink()
        deployment.start_institutions(specs)
        deployment.submit(
            {
                "run-config": str(config),
                "roster": str(roster),
                "server-key": str(keys / "server.key"),
                "unsafe-plaintext-key": True,
                "state-dir": str(coordinator),
                "join-timeout": 60.0,
                "join-reply-timeout": 60.0,
                "phase-timeout": 60.0,
                "train-timeout": 60.0,
                "echo-probes": 0.0,
            }
        )
        deadline = time.monotonic() + 240
        while not (coordinator / METRICS_FILE).exists():
            if time.monotonic() > deadline:
                pytest.fail(f"the run did not end in time\n{_logs(deployment)}")
            time.sleep(0.2)
        misbehaved = {
            PARTIES[i]: deployment.log_tail(f"agent-{PARTIES[i]}", 200) for i in MISBEHAVE
        }
    deployed_s = time.monotonic() - started

    # Each cheat happened as scripted (the test agents say so on stderr) ...
    assert "round 1: dealt holder 0 a share off the polynomial" in misbehaved[PARTIES[DEALER]]
    assert "round 2: revealed self-seed shares" in misbehaved[PARTIES[HOLDER]]
    # ... and was caught, on the cheater's own signed messages, exactly once each.
    caught = [
        dict(e.payload)
        for e in _entries(coordinator, "server")
        if e.event is EventType.MISBEHAVIOUR
    ]
    for entry in caught:
        _checked_evidence(coordinator, parties, entry)
        del entry["evidence_sha256"]
    assert caught == [
        {"round": 1, "party": DEALER, "kind": "bad-shares", "accuser": VICTIM},
        {"round": 2, "party": HOLDER, "kind": "bad-share-revealed", "accuser": -1},
    ]

    # The run completed: round 1 for the four others (the dealer, left out before masking,
    # released nothing and got no result), round 2 for all five.
    metrics: dict[str, Any] = json.loads((coordinator / METRICS_FILE).read_text())
    assert metrics["transport"] == "flower"
    first, second = (e for e in metrics["history"] if e["round"] >= 1)
    assert first["status"] == second["status"] == "completed"
    assert first["completed"] == N - 1
    assert first["dropouts"] == {PARTIES[DEALER]: "dropped out"}
    assert second["completed"] == N
    assert second["dropouts"] == {}
    for spec in specs:
        expected = [2] if spec.party == PARTIES[DEALER] else [1, 2]
        assert _released(spec.state, spec.party) == expected, spec.party
    # Round 2's average reached everyone, the bad holder included: FedAvg gives all one model.
    models = [flat_parameters(load_saved_model(spec.state / MODEL_FILE).model) for spec in specs]
    for party, model in zip(PARTIES, models, strict=True):
        assert np.array_equal(model, models[0]), party

    audit = tmp_path / "audit"
    (audit / "ledgers").mkdir(parents=True)
    shutil.copy(roster, audit / "roster.toml")
    for ledger_file in sorted(tmp_path.glob("*/**/ledgers/*.jsonl")):
        shutil.copy(ledger_file, audit / "ledgers" / ledger_file.name)
    assert len(list((audit / "ledgers").iterdir())) == N + 1
    verdict = verify_run(audit)
    assert verdict.ok, verdict
    print(f"deployed in {deployed_s:.0f} s")
