"""``securefed bench deploy``: one run configuration on Flower against the simulation.

The configuration (``--config FILE``, or the default below) runs twice:

* in this process, as the simulation (:func:`~securefed.runtime.federated.run_federation`);
* as a deployment: a SuperLink and one SuperNode + agent per institution on 127.0.0.1 with TLS
  (:class:`~securefed.runtime.flower.launch.LocalDeployment`), the agents being test agents
  (``python -m securefed.testing.agent --seed <run seed>``, started as processes) seeded as the
  simulation seeds its institutions.

Before that, the configuration is made deployable the same way for both runs: a partition
source is prepared into a data directory (``[data] directory``), declared segments are listed
from its ``federation.json``, and ``baselines`` and ``dropout_rate`` (simulation only) are
dropped; ``adjusted`` lists what changed. The default: group mode with declared segments (one
group), DP, the demo CNN (63,882 parameters), N = 4 institutions of 300 bundled digits, 3
rounds. Reported (one JSON object):

* ``correct``: every institution's final model equals the simulation's within ``tolerance``:
  ``relative_difference``, the largest ||w_deployed - w_simulated|| / ||w_simulated - w_initial||
  over institutions, is below 1e-2 -- both runs use the same seeds, so the fixed-point codec's
  stochastic rounding in the secure aggregation is the only difference;
* ``exchanges_per_round``: the deployment's exchanges per round in the steady state (rounds
  >= 2; the first round adds its key advertisement, and in group mode with learned segments
  the regrouping);
* ``echo_rtt_s``: one exchange on Flower alone (the ServerApp's median round trip of an empty
  message to every node, answered by the ClientApp without the agent);
* ``round_s``, ``sim_round_s``: mean seconds per round, deployed and simulated (rounds >= 2 when
  there are several);
* ``target_round_s`` = 1.5 x exchanges_per_round x echo_rtt_s + 1.5 x sim_round_s, and
  ``target_met``: ``round_s`` <= ``target_round_s`` -- a round costs its exchanges on Flower
  plus its work, with 50 % slack on each;
* ``bytes_per_client``: engine bytes per institution per round, both directions, as carried
  inside Flower messages (Flower's own framing, HTTP and TLS are not counted).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from securefed.data import PartitionConfig, Scheme, load_tenants, num_classes, prepare
from securefed.dp.spend import SPEND_DIR
from securefed.errors import ConfigError
from securefed.models import flat_parameters, load_model
from securefed.runtime.config import (
    DataConfig,
    PersonalizationMode,
    RunConfig,
    SegmentSource,
    load_run_config,
)
from securefed.runtime.federated import model_spec, run_federation
from securefed.runtime.flower.deployment import METRICS_FILE, MODEL_FILE, check_deployable
from securefed.runtime.flower.launch import InstitutionSpec, LocalDeployment, write_test_parties
from securefed.runtime.tenants import load_run_tenants

__all__ = ["TOLERANCE", "DeployBenchmark", "deployable_config", "run_deploy_benchmark"]

#: The test agent, started as a process (securefed.testing is never imported here).
TEST_AGENT = (sys.executable, "-m", "securefed.testing.agent")
#: ``correct`` holds when every relative difference is below this.
TOLERANCE = 1e-2

_DEFAULT = """\
name = "bench-deploy"
mode = "group"
rounds = {rounds}
seed = 7

[data]
directory = "{data}"
model = "cnn"

[training]
lr = 0.5
batch_size = 32
local_epochs = 1

[dp]
target_epsilon = 8.0
delta = 1e-5

[personalize]
segments = {segments}
"""


@dataclass(frozen=True, slots=True)
class DeployBenchmark:
    config: str
    mode: str
    clients: int
    dim: int
    rounds: int
    adjusted: list[str]
    correct: bool
    tolerance: float
    relative_difference: float
    max_abs_difference: float
    exchanges_per_round: float | None
    echo_rtt_s: float | None
    round_s: float
    sim_round_s: float
    target_round_s: float | None
    target_met: bool | None
    bytes_per_client: float
    wall_s: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def deployable_config(config: RunConfig, root: Path) -> tuple[RunConfig, list[str]]:
    """``config`` as both runs of the benchmark take it (module docstring), and what changed.
    A partition source is prepared into ``root/data``. Raises ConfigError for what cannot be
    deployed at all (``secure = false``) or declared segments without ``federation.json``."""
    adjusted = []
    if config.baselines:
        config = dataclasses.replace(config, baselines=())
        adjusted.append("baselines dropped (simulation only)")
    if config.dropout_rate:
        config = dataclasses.replace(config, dropout_rate=0.0)
        adjusted.append("dropout_rate set to 0 (simulated dropouts: simulation only)")
    tenants = load_run_tenants(config.data, root, copy=True)
    data = DataConfig(directory=str(tenants.directory), model=config.data.model)
    if config.data.directory is None:
        adjusted.append(f"the partition prepared into {tenants.directory}")
    elif config.data != data:
        adjusted.append("[data] partition keys dropped (a data directory is read as it is)")
    config = dataclasses.replace(config, data=data)
    segments = config.personalize.segments
    if config.mode is PersonalizationMode.GROUP and segments is SegmentSource.DECLARED:
        if tenants.segments is None:
            raise ConfigError(f"{tenants.directory} declares no segments (federation.json)")
        listed = dataclasses.replace(config.personalize, segments=tenants.segments)
        config = dataclasses.replace(config, personalize=listed)
        adjusted.append("declared segments listed from federation.json")
    check_deployable(config)
    return config, adjusted


def _default_config(root: Path, *, clients: int, rounds: int, samples: int) -> Path:
    data = root / "source"
    prepare(
        "bundled",
        out=data,
        config=PartitionConfig(
            tenants=clients, groups=1, scheme=Scheme.IID, samples_per_tenant=samples
        ),
    )
    path = root / "default.toml"
    path.write_text(
        _DEFAULT.format(rounds=rounds, data=data, segments=json.dumps([0] * clients)),
        encoding="utf-8",
    )
    return path


def _initial_model(config: RunConfig, num_classes: int, sample_shape: tuple[int, ...]) -> Any:
    return model_spec(config, num_classes, sample_shape).build(seed=config.seed)


def _vector(model: Any, path: Path) -> npt.NDArray[np.float64]:
    load_model(model, path)
    return flat_parameters(model)


def run_deploy_benchmark(
    config_path: Path | None = None,
    *,
    clients: int = 4,
    rounds: int = 3,
    samples_per_tenant: int = 300,
    timeout: float = 1800.0,
) -> DeployBenchmark:
    """Run the benchmark (module docstring); ``clients``, ``rounds`` and
    ``samples_per_tenant`` shape the default configuration only. Raises ConfigError if flwr is
    missing, the configuration cannot be deployed, or the deployment does not finish within
    ``timeout`` seconds (the logs' tails are in the message)."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="securefed-bench-deploy-") as tmp:
        root = Path(tmp)
        source = config_path or _default_config(
            root, clients=clients, rounds=rounds, samples=samples_per_tenant
        )
        config, adjusted = deployable_config(load_run_config(source), root)
        config_file = root / "run.toml"
        config_file.write_text(config.to_toml(), encoding="utf-8")
        assert config.data.directory is not None  # noqa: S101 - deployable_config set it
        data = Path(config.data.directory)
        tenants = load_tenants(data)
        n = len(tenants)
        classes = num_classes(tenants)
        roster = write_test_parties(root, n)
        specs = [
            InstitutionSpec(
                roster.client(i).party_id,
                root / "keys" / f"{roster.client(i).party_id}.key",
                data,
                tenants[i].index,
                root / "nodes" / roster.client(i).party_id,
                ("--seed", str(config.seed)),
            )
            for i in range(n)
        ]
        metrics = _deploy(root, config_file, specs, classes, timeout)
        # the simulation trains its own copy of the (public) records: the deployment's spend,
        # kept next to the records, would otherwise change the simulation's noise
        sim_data = shutil.copytree(
            data, root / "sim-data", ignore=shutil.ignore_patterns(SPEND_DIR)
        )
        sim_config = dataclasses.replace(
            config, data=dataclasses.replace(config.data, directory=str(sim_data))
        )
        sim = run_federation(sim_config, root / "sim").metrics

        initial = flat_parameters(_initial_model(config, classes, tenants[0].sample_shape))
        relative, largest = [], []
        for spec in specs:
            model = _initial_model(config, classes, tenants[0].sample_shape)
            deployed = _vector(model, spec.state / MODEL_FILE)
            simulated = _vector(model, root / "sim" / "models" / f"{spec.party}.safetensors")
            moved = float(np.linalg.norm(simulated - initial))
            gap = deployed - simulated
            largest.append(float(np.abs(gap).max()))
            relative.append(float(np.linalg.norm(gap)) / moved if moved > 0 else float("inf"))
        steady = [e for e in metrics["history"] if e["round"] >= 2] or [
            e for e in metrics["history"] if e["round"] >= 1
        ]
        sim_steady = [e for e in sim["history"] if e["round"] in {s["round"] for s in steady}]
        exchanges = (
            statistics.fmean(e["exchanges"] for e in steady)
            if any(e["round"] >= 2 for e in steady)
            else None
        )
        round_s = statistics.fmean(e["seconds"] for e in steady)
        sim_round_s = statistics.fmean(e["seconds"] for e in sim_steady)
        echo = metrics.get("echo_rtt_s")
        target = None
        if exchanges is not None and echo is not None:
            target = 1.5 * exchanges * echo + 1.5 * sim_round_s
        completed = int(metrics["rounds"])
        traffic = [
            metrics["bytes_sent"].get(s.party, 0) + metrics["bytes_received"].get(s.party, 0)
            for s in specs
        ]
        return DeployBenchmark(
            config="default" if config_path is None else str(config_path),
            mode=config.mode.value,
            clients=n,
            dim=int(initial.size),
            rounds=completed,
            adjusted=adjusted,
            correct=max(relative) < TOLERANCE and completed == config.rounds,
            tolerance=TOLERANCE,
            relative_difference=max(relative),
            max_abs_difference=max(largest),
            exchanges_per_round=exchanges,
            echo_rtt_s=None if echo is None else round(echo, 3),
            round_s=round(round_s, 3),
            sim_round_s=round(sim_round_s, 3),
            target_round_s=None if target is None else round(target, 3),
            target_met=None if target is None else round_s <= target,
            bytes_per_client=round(statistics.fmean(traffic) / max(completed, 1)),
            wall_s=round(time.perf_counter() - started, 1),
        )


def _deploy(
    root: Path, config: Path, specs: list[InstitutionSpec], classes: int, timeout: float
) -> dict[str, Any]:
    """The deployment of ``config``: its metrics.json once the ServerApp wrote it."""
    coordinator = root / "coordinator"
    with LocalDeployment(
        root / "flower",
        config=config,
        roster=root / "roster.toml",
        num_classes=classes,
        agent=TEST_AGENT,
    ) as deployment:
        deployment.start_superlink()
        for spec in specs:
            deployment.start_institution(spec)
        deployment.submit(
            {
                "run-config": str(config),
                "roster": str(root / "roster.toml"),
                "server-key": str(root / "keys" / "server.key"),
                "unsafe-plaintext-key": True,
                "state-dir": str(coordinator),
            }
        )
        deadline = time.monotonic() + timeout
        while not (coordinator / METRICS_FILE).exists():
            dead = [s.party for s in specs if deployment.finished(f"agent-{s.party}")]
            if dead or time.monotonic() > deadline:
                what = f"the agents of {', '.join(dead)} exited" if dead else "no end in time"
                raise ConfigError(
                    f"the deployment failed ({what}):\n" + deployment.log_tail("superlink")
                )
            time.sleep(0.5)
    result: dict[str, Any] = json.loads((coordinator / METRICS_FILE).read_text())
    return result
