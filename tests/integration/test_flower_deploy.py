"""A real deployment on Flower: SuperLink and 4 SuperNodes as processes on 127.0.0.1 with TLS.

Secure FedAMP with DP, 2 rounds (attention weights from secret sketches of the models, the
sketch seed set up among the institutions each round, target-blinded personalized outputs).
In round 1, after every institution has trained and sent its key advertisement, and before the
masked inputs are asked for, one institution's SuperNode
and agent are killed (SIGKILL: a crash). The round must complete for the other three through
dropout recovery; the killed institution's accountant must show the round it started (it was
charged before training, DESIGN §5); it is restarted from its state directory before round 2
and must take part in it; all five ledgers must verify together; and the models must equal
those of the same deployment logic run in one process with the same kill point
(`tests/runtime/test_deploy_loopback.py`, which in turn equals the simulation when nobody
drops) -- up to the fixed-point codec's rounding and the sketch's estimation error (each
round's sketch seed is drawn afresh by a client, so the two runs' xi differ slightly): under
1 % of what training moved each model.

Needs ``securefed[flower]`` (skipped without flwr); run by ``make test-integration`` (which
``.ci/run`` calls). Every process is started and stopped by the test.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")

from securefed.audit import verify_run
from securefed.cli import main as securefed_main
from securefed.data import PartitionConfig, Scheme, prepare
from securefed.dp import load_state
from securefed.models import flat_parameters, load_model, mlp
from securefed.runtime.config import load_run_config
from securefed.runtime.flower.institution import MODEL_FILE
from securefed.runtime.flower.launch import InstitutionSpec, LocalDeployment
from securefed.runtime.flower.loopback import run_loopback
from securefed.testing import make_federation

N = 4
VICTIM = "bank-2"
RUN_TOML = """\
name = "deploy-test"
mode = "fedamp"
rounds = 2
seed = 3

[data]
directory = "{data}"
model = "mlp"

[training]
lr = 0.5
batch_size = 32

[dp]
target_epsilon = 4.0
delta = 1e-4

"""


def _wait(predicate: Any, timeout: float, what: str, deployment: LocalDeployment) -> None:
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
    path = state / "progress.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _setup(root: Path) -> tuple[Path, Path, list[InstitutionSpec]]:
    data = root / "data"
    prepare(
        "bundled",
        out=data,
        config=PartitionConfig(tenants=N, groups=1, scheme=Scheme.IID, samples_per_tenant=200),
    )
    keys = root / "keys"
    for party in ["server", *(f"bank-{i}" for i in range(N))]:
        argv = ["keys", "generate", "--id", party, "--out", str(keys), "--unsafe-plaintext"]
        assert securefed_main(argv) == 0
    roster = root / "roster.toml"
    clients = [arg for i in range(N) for arg in ("--client", str(keys / f"bank-{i}.pub.toml"))]
    argv = ["keys", "roster", "--server", str(keys / "server.pub.toml"), *clients]
    assert securefed_main([*argv, "--out", str(roster)]) == 0
    config = root / "run.toml"
    config.write_text(RUN_TOML.format(data=data), encoding="utf-8")
    specs = [
        InstitutionSpec(f"bank-{i}", keys / f"bank-{i}.key", data, i, root / "nodes" / f"bank-{i}")
        for i in range(N)
    ]
    return config, roster, specs


def test_a_killed_supernode_is_recovered_charged_and_rejoins(tmp_path: Path) -> None:
    config, roster, specs = _setup(tmp_path)
    coordinator = tmp_path / "coordinator"
    with LocalDeployment(
        tmp_path / "flower", config=config, roster=roster, num_classes=10, reproducible=True
    ) as deployment:
        deployment.start_superlink()
        for spec in specs:
            deployment.start_institution(spec)
        deployment.submit(
            {
                "run-config": str(config),
                "roster": str(roster),
                "server-key": str(tmp_path / "keys" / "server.key"),
                "unsafe-plaintext-key": True,
                "state-dir": str(coordinator),
                "phase-timeout": 45.0,
                "hello-timeout": 30.0,
                "join-timeout": 90.0,
                "pause-before": "1:mask,2:hello",
            }
        )
        victim = next(s for s in specs if s.party == VICTIM)
        _wait(
            lambda: (
                (coordinator / "resume-1-mask").exists()
                or any(p["phase"] == "mask" and p["round"] == 1 for p in _progress(coordinator))
            ),
            300,
            "round 1 to reach the mask phase",
            deployment,
        )
        deployment.kill_institution(VICTIM)
        (coordinator / "resume-1-mask").touch()
        _wait(
            lambda: any(p["phase"] == "hello" and p["round"] == 2 for p in _progress(coordinator)),
            300,
            "round 2 to start",
            deployment,
        )
        deployment.start_institution(victim)  # returns once its new SuperNode is registered
        (coordinator / "resume-2-hello").touch()
        _wait((coordinator / "metrics.json").exists, 400, "the run to end", deployment)

    metrics = json.loads((coordinator / "metrics.json").read_text())
    first, second = metrics["history"]
    assert VICTIM in first["dropouts"]
    assert sorted(first["completed"]) == ["bank-0", "bank-1", "bank-3"]
    assert sorted(second["completed"]) == [f"bank-{i}" for i in range(N)]
    state = load_state(victim.state / "trainer")
    assert state is not None
    assert [c.round for c in state.charges] == [1, 2]
    assert all(c.epsilon <= 4.0 for c in state.charges)

    audit = tmp_path / "audit"
    (audit / "ledgers").mkdir(parents=True)
    shutil.copy(roster, audit / "roster.toml")
    for ledger in sorted(tmp_path.rglob("ledgers/*.jsonl")):
        shutil.copy(ledger, audit / "ledgers" / ledger.name)
    assert len(list((audit / "ledgers").iterdir())) == N + 1
    result = verify_run(audit)
    assert result.ok, result

    expected = _in_process_reference(tmp_path / "reference", config)
    initial = flat_parameters(mlp(784, 10, seed=load_run_config(config).seed))
    for spec in specs:
        model = mlp(784, 10)
        load_model(model, spec.state / MODEL_FILE)
        gap = np.linalg.norm(flat_parameters(model) - expected[spec.party])
        assert gap < 1e-2 * np.linalg.norm(expected[spec.party] - initial), spec.party


def _in_process_reference(out: Path, config: Path) -> dict[str, np.ndarray]:
    """The same deployment (same run seed, same crash point) through the loopback exchange."""
    run_loopback(load_run_config(config), make_federation(N), out, crash=VICTIM)
    vectors = {}
    for i in range(N):
        model = mlp(784, 10)
        load_model(model, out / "institutions" / f"bank-{i}" / MODEL_FILE)
        vectors[f"bank-{i}"] = flat_parameters(model)
    return vectors
