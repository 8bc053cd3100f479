"""``securefed bench deploy``: one deployment on Flower against the simulation, same run.

N institutions (default 4) as real SuperNodes + agents on 127.0.0.1 with TLS, the demo CNN
(63,882 parameters), secure group mode with DP, one local epoch per round; then the simulation
of the same configuration and seeds in this process. Reported:

* ``round_s``: the coordinator's wall time per round (mean over rounds; excludes starting the
  processes and ``flwr run``'s submission);
* ``sim_round_s``: the simulation's time per round, same configuration and seeds;
* ``overhead``: ``round_s / sim_round_s``;
* ``bytes_per_client``: securefed message bytes per institution per round, both directions,
  as carried inside Flower messages (Flower's own framing, HTTP and TLS are not counted);
* ``correct``: every institution's final model equals the simulation's up to the fixed-point
  codec's stochastic rounding, which is the only difference (the DP noise is seeded from the
  run seed for this comparison -- a hazard every ledger records): ``relative_difference``, the
  largest ||w_deployed - w_simulated|| / ||w_simulated - w_initial|| over institutions, is below
  1e-2, i.e. the two differ by under 1 % of what training moved the model.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from securefed.crypto.cleartext import export_unencrypted_signing_key_unsafe
from securefed.data import PartitionConfig, Scheme, prepare
from securefed.errors import ConfigError
from securefed.models import flat_parameters, load_model
from securefed.models.nets import cnn
from securefed.runtime.config import load_run_config
from securefed.runtime.federated import RoundReport, run_federation
from securefed.runtime.flower.institution import MODEL_FILE
from securefed.runtime.flower.launch import InstitutionSpec, LocalDeployment
from securefed.secagg.roster import PublicIdentity, Roster, save_identity_files, save_roster
from securefed.testing import make_federation

__all__ = ["DeployBenchmark", "run_deploy_benchmark"]

_CONFIG = """\
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
    clients: int
    dim: int
    rounds: int
    round_s: float
    sim_round_s: float
    overhead: float
    bytes_per_client: float
    correct: bool
    max_abs_difference: float
    relative_difference: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _write_keys(root: Path, clients: int) -> Roster:
    """Throwaway unencrypted test keys (the deployment ledgers that as a hazard)."""
    federation = make_federation(clients)
    keys = root / "keys"
    parties = [(federation.roster.server.party_id, federation.server_key)]
    parties += [
        (federation.roster.client(i).party_id, federation.client_keys[i]) for i in range(clients)
    ]
    for party, key in parties:
        identity = PublicIdentity(party, key.verify_key())
        save_identity_files(keys, identity, export_unencrypted_signing_key_unsafe(key))
    save_roster(federation.roster, root / "roster.toml")
    return federation.roster


def run_deploy_benchmark(
    *, clients: int = 4, rounds: int = 2, samples_per_tenant: int = 300, timeout: float = 1800
) -> DeployBenchmark:
    """Run the benchmark (module docstring). Raises ConfigError if flwr is missing or the run
    does not finish within ``timeout`` seconds (the logs' tails are in the message)."""
    with tempfile.TemporaryDirectory(prefix="securefed-bench-deploy-") as tmp:
        root = Path(tmp)
        data = root / "data"
        prepare(
            "bundled",
            out=data,
            config=PartitionConfig(
                tenants=clients,
                groups=1,
                scheme=Scheme.IID,
                samples_per_tenant=samples_per_tenant,
            ),
        )
        config_path = root / "run.toml"
        config_path.write_text(
            _CONFIG.format(rounds=rounds, data=data, segments=json.dumps([0] * clients)),
            encoding="utf-8",
        )
        roster = _write_keys(root, clients)
        coordinator = root / "coordinator"
        with LocalDeployment(
            root / "flower",
            config=config_path,
            roster=root / "roster.toml",
            num_classes=10,
            reproducible=True,
        ) as deployment:
            deployment.start_superlink()
            specs = []
            for i in range(clients):
                party = roster.client(i).party_id
                spec = InstitutionSpec(party, root / "keys" / f"{party}.key", data, i, root / party)
                deployment.start_institution(spec)
                specs.append(spec)
            deployment.submit(
                {
                    "run-config": str(config_path),
                    "roster": str(root / "roster.toml"),
                    "server-key": str(root / "keys" / "server.key"),
                    "unsafe-plaintext-key": True,
                    "state-dir": str(coordinator),
                }
            )
            deadline = time.monotonic() + timeout
            while not (coordinator / "metrics.json").exists():
                if time.monotonic() > deadline:
                    raise ConfigError(
                        "the deployment did not finish in time:\n"
                        + deployment.log_tail("superlink")
                    )
                time.sleep(1.0)
        metrics = json.loads((coordinator / "metrics.json").read_text())

        reports: list[RoundReport] = []
        run_federation(load_run_config(config_path), root / "sim", progress=reports.append)

        differences, relative = [], []
        initial = flat_parameters(cnn(10, seed=load_run_config(config_path).seed))
        for spec in specs:
            deployed, simulated = cnn(10), cnn(10)
            load_model(deployed, spec.state / MODEL_FILE)
            load_model(simulated, root / "sim" / "models" / f"{spec.party}.safetensors")
            gap = flat_parameters(deployed) - flat_parameters(simulated)
            moved = flat_parameters(simulated) - initial
            differences.append(float(np.abs(gap).max()))
            relative.append(float(np.linalg.norm(gap) / np.linalg.norm(moved)))
        round_s = statistics.fmean(entry["seconds"] for entry in metrics["history"])
        sim_round_s = statistics.fmean(report.seconds for report in reports)
        traffic = [
            metrics["bytes_sent"][spec.party] + metrics["bytes_received"][spec.party]
            for spec in specs
        ]
        return DeployBenchmark(
            clients=clients,
            dim=int(flat_parameters(cnn(10)).size),
            rounds=len(metrics["history"]),
            round_s=round(round_s, 3),
            sim_round_s=round(sim_round_s, 3),
            overhead=round(round_s / sim_round_s, 2),
            bytes_per_client=round(statistics.fmean(traffic) / len(metrics["history"])),
            correct=max(relative) < 1e-2 and len(metrics["history"]) == rounds,
            max_abs_difference=max(differences),
            relative_difference=max(relative),
        )
