"""A real deployment on Flower: a SuperLink and 7 SuperNodes as processes on 127.0.0.1 with TLS.

Secure group mode with a LEARNED partition (2 groups, chosen in round 1 from secret sketches of
each institution's DP similarity statistic, released once before round 1), DP training, 3
rounds; the agents are test agents (``python -m securefed.testing.agent --seed 3``), seeded as
the simulation seeds its institutions. One institution's agent dies (``--crash-at
1:step:mask``: ``os._exit`` when round 1's masking request reaches it, after it trained, sent
its sketch, advertised its keys and shared its mask secrets); its SuperNode keeps running, so
every further request to it fails and the coordinator forgets the party. Once round 2 has
started the agent is restarted from its state directory. Then:

* round 1 completes for the other six through dropout recovery (the survivors' shares of its
  mask key remove its pairwise masks), and the learned partition is the data's two segments;
* the restarted institution rejoins (its next join request carries round 3's keys), sits
  round 2 out and takes part in round 3; its accountant shows the statistic and the rounds it
  started, round 1 included (charged before training, DESIGN §5), and its ledger continued;
* all eight ledgers verify together (``securefed audit verify``);
* every model equals the one the same deployment computes in one process with the same seeds
  and the same crash (:func:`securefed.testing.loopback.run_loopback`, which equals the
  simulation when nobody crashes: ``tests/runtime/test_deploy_loopback.py``) within 1 % of what
  training moved it: the codec's stochastic rounding is the only difference.

Needs ``securefed[flower]`` (skipped without flwr); run by ``make test-integration``. Every
process is started and stopped by the test. About 4 to 5 minutes on 2 cores.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")

from securefed.audit import verify_run
from securefed.cli import main as securefed_main
from securefed.data import PartitionConfig, Scheme, prepare
from securefed.dp import load_state
from securefed.dp.spend import SPEND_DIR
from securefed.models import flat_parameters, load_model, mlp
from securefed.runtime.flower.deployment import MODEL_FILE, PROGRESS_FILE
from securefed.runtime.flower.launch import InstitutionSpec, LocalDeployment
from securefed.testing.agent import CRASH_STATUS, CrashPoint
from securefed.testing.loopback import DeploymentFiles, run_loopback

N = 7
SEED = 3
VICTIM = "bank-1"
CRASH = "1:step:mask"
TEST_AGENT = (sys.executable, "-m", "securefed.testing.agent")
TOLERANCE = 1e-2
RUN_TOML = """\
name = "deploy-test"
mode = "group"
rounds = 3
seed = {seed}

[data]
directory = "{data}"
model = "mlp"

[training]
lr = 0.5
batch_size = 32

[dp]
target_epsilon = 4.0
delta = 1e-4

[personalize]
segments = "learned"
groups = 2
similarity = "statistic"
"""


def _wait(
    predicate: Callable[[], bool], timeout: float, what: str, deployment: LocalDeployment
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            logs = "\n".join(
                f"--- {name}\n{deployment.log_tail(name)}"
                for name in ("superlink", f"agent-{VICTIM}", "flwr-run")
            )
            pytest.fail(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.5)


def _progress(state: Path) -> list[dict[str, Any]]:
    path = state / PROGRESS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _setup(root: Path) -> DeploymentFiles:
    """Seven institutions of two latent segments (4 + 3), keys and roster made with the CLI."""
    data = root / "data"
    prepare(
        "bundled",
        out=data,
        config=PartitionConfig(
            tenants=N, groups=2, scheme=Scheme.CONCEPT_SHIFT, samples_per_tenant=200
        ),
    )
    keys = root / "keys"
    parties = tuple(f"bank-{i}" for i in range(N))
    for party in ["server", *parties]:
        argv = ["keys", "generate", "--id", party, "--out", str(keys), "--unsafe-plaintext"]
        assert securefed_main(argv) == 0
    roster = root / "roster.toml"
    clients = [arg for party in parties for arg in ("--client", str(keys / f"{party}.pub.toml"))]
    argv = ["keys", "roster", "--server", str(keys / "server.pub.toml"), *clients]
    assert securefed_main([*argv, "--out", str(roster)]) == 0
    config = root / "run.toml"
    config.write_text(RUN_TOML.format(seed=SEED, data=data), encoding="utf-8")
    return DeploymentFiles(config, roster, keys, data, 10, parties)


def _assert_restart_continued(state: Path) -> None:
    """The restarted agent continued its ledger, and kept its round guard: the session of round
    1 (before the crash) is still there, next to round 3's (after it), so a replay of either is
    refused."""
    ledger = (state / "ledgers" / f"{VICTIM}.jsonl").read_text()
    assert ledger.count('"event":"run.configured"') == 1
    guard = json.loads((state / "round-guard.json").read_text())
    rounds = sorted(guard["guard"]["highest_round"].values())
    assert rounds[0] == 1
    assert rounds[-1] == 3


def _own_records(files: DeploymentFiles, copy: Path) -> DeploymentFiles:
    """``files`` on a copy of the records without their spend: the deployment's spend, kept next
    to them (docs/dp.md), would otherwise leave a reference run no budget."""
    shutil.copytree(files.data, copy, ignore=shutil.ignore_patterns(SPEND_DIR))
    return dataclasses.replace(files, data=copy)


def _model(path: Path) -> np.ndarray:
    model = mlp(784, 10)
    load_model(model, path)
    return flat_parameters(model)


def test_a_crashed_institution_is_recovered_charged_and_rejoins(tmp_path: Path) -> None:
    files = _setup(tmp_path)
    coordinator = tmp_path / "coordinator"
    specs = [
        InstitutionSpec(
            party,
            files.keys / f"{party}.key",
            files.data,
            i,
            tmp_path / "nodes" / party,
            ("--seed", str(SEED), *(("--crash-at", CRASH) if party == VICTIM else ())),
        )
        for i, party in enumerate(files.parties)
    ]
    victim = next(s for s in specs if s.party == VICTIM)
    started = time.monotonic()
    with LocalDeployment(
        tmp_path / "flower",
        config=files.config,
        roster=files.roster,
        num_classes=files.num_classes,
        agent=TEST_AGENT,
    ) as deployment:
        deployment.start_superlink()
        deployment.start_institutions(specs)
        deployment.submit(
            {
                "run-config": str(files.config),
                "roster": str(files.roster),
                "server-key": str(files.keys / "server.key"),
                "unsafe-plaintext-key": True,
                "state-dir": str(coordinator),
                "join-timeout": 60.0,
                "join-reply-timeout": 60.0,
                "phase-timeout": 60.0,
                "train-timeout": 120.0,
                "echo-probes": 1.0,
            }
        )
        assert deployment.wait_for_agent_exit(VICTIM, 300) == CRASH_STATUS
        # Restart once round 1 is over (its unmasking exchange answered): whether the agent is
        # back for round 2's first exchange or only for its last, it rejoins with round 3's keys.
        _wait(
            lambda: any(p["round"] == 2 for p in _progress(coordinator)),
            300,
            "round 2 to start",
            deployment,
        )
        restarted = InstitutionSpec(
            victim.party, victim.key, victim.data, victim.tenant, victim.state, ("--seed", "3")
        )
        deployment.start_agent(restarted)
        _wait((coordinator / "metrics.json").exists, 400, "the run to end", deployment)
    deployed_s = time.monotonic() - started

    metrics = json.loads((coordinator / "metrics.json").read_text())
    assert metrics["transport"] == "flower"
    assert metrics["echo_rtt_s"] is not None
    assert metrics["echo_rtt_s"] > 0
    assert metrics["partition"] == [0, 0, 0, 0, 1, 1, 1]  # the data's two segments
    first, second, third = (e for e in metrics["history"] if e["round"] >= 1)
    assert first["dropouts"] == {VICTIM: "mask"}
    assert first["completed"] == N - 1
    assert second["dropouts"] == {VICTIM: "advertise"}
    assert second["completed"] == N - 1
    assert third["dropouts"] == {}
    assert third["completed"] == N
    state = load_state(victim.state / "trainer")
    assert state is not None
    assert [c.round for c in state.charges] == [0, 1, 3]  # the statistic, rounds 1 and 3
    assert all(c.epsilon <= 4.0 for c in state.charges)
    _assert_restart_continued(victim.state)

    audit = tmp_path / "audit"
    (audit / "ledgers").mkdir(parents=True)
    shutil.copy(files.roster, audit / "roster.toml")
    for ledger_file in sorted(tmp_path.glob("*/**/ledgers/*.jsonl")):
        shutil.copy(ledger_file, audit / "ledgers" / ledger_file.name)
    assert len(list((audit / "ledgers").iterdir())) == N + 1
    assert securefed_main(["audit", "verify", str(audit)]) == 0
    assert verify_run(audit).ok

    reference = tmp_path / "reference"
    expected = run_loopback(
        _own_records(files, tmp_path / "reference-data"),
        reference,
        seed=SEED,
        crash=(VICTIM, CrashPoint.parse(CRASH)),
        restart_after=CrashPoint.parse("2:train"),
    )
    assert [e.completed for e in expected.history] == [e["completed"] for e in metrics["history"]]
    initial = flat_parameters(mlp(784, 10, seed=SEED))
    for spec in specs:
        deployed = _model(spec.state / MODEL_FILE)
        simulated = _model(reference / "nodes" / spec.party / MODEL_FILE)
        moved = np.linalg.norm(simulated - initial)
        assert moved > 0.1, spec.party
        assert np.linalg.norm(deployed - simulated) < TOLERANCE * moved, spec.party
    print(f"deployed in {deployed_s:.0f} s; echo {metrics['echo_rtt_s']:.2f} s")
