"""What every process of a deployment agrees on, without Flower or torch.

* :func:`check_deployable` -- the one check of a run configuration that the ServerApp and every
  agent make before anything else: each key either works under ``securefed deploy`` or is
  refused here with the reason (docs/deploy.md, "What a deployment runs");
* :data:`SERVER_RUN_CONFIG` -- the Flower run-configuration keys the ServerApp reads, with their
  defaults, and :func:`write_flower_app`, the Flower App that ``flwr run`` submits;
* :func:`add_agent_arguments` -- the command line of ``securefed deploy agent`` (also taken by
  the test agent, ``python -m securefed.testing.agent``);
* the names of the files in the state directories.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from securefed import __version__
from securefed.errors import ConfigError
from securefed.files import write_atomic
from securefed.runtime.config import (
    DataConfig,
    PersonalizationMode,
    RunConfig,
    SegmentSource,
    SimilaritySource,
)
from securefed.runtime.nodes import MODEL_FILE, STATISTIC_FILE

__all__ = [
    "METRICS_FILE",
    "MODEL_FILE",
    "PROGRESS_FILE",
    "SEED_FILE",
    "SERVER_RUN_CONFIG",
    "STATISTIC_FILE",
    "UNSAFE_KEY_HAZARD",
    "add_agent_arguments",
    "check_deployable",
    "write_flower_app",
]

# An institution's state directory holds MODEL_FILE (the model after every change: a restart
# continues from it) and STATISTIC_FILE (its released DP similarity statistic, released once),
# both from securefed.runtime.nodes, and:
#: the session's secret sketch seed and its commitment (mode 0600, written by the engine).
SEED_FILE = "sketch-seed"
#: The coordinator's state directory: the run's record, written at the end.
METRICS_FILE = "metrics.json"
#: ... one JSON line per exchange (round, phase, time).
PROGRESS_FILE = "progress.jsonl"

UNSAFE_KEY_HAZARD = (
    "the identity key was stored unencrypted (a throwaway test key): anyone who can read the "
    "file can sign as this party"
)

#: The partition keys of ``[data]``: how a simulation splits one data set into tenants.
_PARTITION_KEYS = ("source", "tenants", "groups", "scheme", "partition_seed", "samples_per_tenant")


def check_deployable(config: RunConfig) -> None:
    """Raise :class:`ConfigError` naming every key of ``config`` that a deployment does not run,
    and why. Every other key works as in the simulation (docs/deploy.md); ``seed`` fixes only
    the initial model there (every party must start from the same one): data order, DP noise
    and the protocol's randomness come from the operating system.
    """
    problems = []
    if not config.secure:
        problems.append(
            "secure = false is the plaintext comparison of the simulation (the server would "
            "see every model); a deployment always aggregates securely"
        )
    if config.baselines:
        problems.append(
            "baselines are comparison runs of the simulation: each would train every "
            "institution's records again and spend its privacy budget again"
        )
    if config.dropout_rate:
        problems.append(
            "dropout_rate simulates dropouts; in a deployment institutions drop out on their own"
        )
    defaults = DataConfig()
    for key in _PARTITION_KEYS:
        if getattr(config.data, key) != getattr(defaults, key):
            problems.append(
                f"data.{key} describes how the simulation splits one data set into tenants; in "
                "a deployment each institution brings its own data directory (--data)"
            )
    if config.standardizes:
        problems.append(
            'data.standardize = "federation" runs a secure sum of statistics before round 1 '
            "that the deployment's agents do not run yet (the models would stay unscaled)"
        )
    if config.data.parties is not None:
        problems.append(
            "data.parties names the simulation's institutions; in a deployment the roster names "
            "them (each agent's --party)"
        )
    if (
        config.mode is PersonalizationMode.GROUP
        and config.personalize.segments is SegmentSource.DECLARED
    ):
        problems.append(
            'personalize.segments = "declared" reads federation.json from a data directory the '
            "coordinator does not have: list the segments in roster order "
            '(segments = [0, 0, 1, ...]) or use segments = "learned"'
        )
    if config.personalize.similarity is SimilaritySource.STATISTIC and not config.learns_similarity:
        problems.append(
            'personalize.similarity = "statistic" needs a mode that learns similarities '
            f'(fedamp, heurfedamp, or group with segments = "learned"), not {config.mode.value}'
        )
    if problems:
        raise ConfigError("a deployment cannot run this configuration: " + "; ".join(problems))


#: The Flower run-configuration keys the ServerApp reads, with their defaults (docs/deploy.md);
#: ``flwr run APP -c 'key="value" ...'`` overrides them.
SERVER_RUN_CONFIG: dict[str, str | float | bool] = {
    "run-config": "",  # the securefed run TOML every party holds
    "roster": "",  # the pinned roster.toml
    "server-key": "",  # the server's identity key file
    "passphrase-env": "SECUREFED_SERVER_PASSPHRASE",  # the variable holding its passphrase
    "unsafe-plaintext-key": False,  # throwaway test keys only (ledgered as a hazard)
    "state-dir": "",  # the coordinator's directory: ledger, metrics.json, progress.jsonl
    "join-timeout": 120.0,  # before round 1: how long to keep inviting parties that are missing
    "join-reply-timeout": 20.0,  # how long one join exchange waits for the answers
    "train-timeout": 600.0,  # ... an exchange that trains (one local round)
    "phase-timeout": 60.0,  # ... every other exchange
    "poll-interval": 0.1,  # how often the ServerApp asks the SuperLink for replies
    "echo-probes": 3.0,  # empty round trips to every node before the run (echo_rtt_s); 0: none
}


def _toml_table(values: dict[str, str | float | bool]) -> str:
    lines = []
    for key, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = json.dumps(value)  # a JSON string is a valid TOML basic string
        else:
            text = repr(float(value))
        lines.append(f"{key} = {text}\n")
    return "".join(lines)


FLOWER_APP_TOML = """\
# The Flower App that `flwr run` submits for a securefed deployment (docs/deploy.md).
# No code travels with it: the SuperLink and every SuperNode import securefed's apps from the
# securefed {version} installed beside them.
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "securefed-deploy"
version = "{version}"
description = "securefed: secure personalized aggregation with DP and a signed ledger"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "securefed"

[tool.flwr.app.components]
serverapp = "securefed.runtime.flower.server_app:app"
clientapp = "securefed.runtime.flower.client_app:app"

[tool.flwr.app.config]
{config}"""


def write_flower_app(directory: Path) -> Path:
    """Write ``directory/pyproject.toml`` (never overwritten); return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "pyproject.toml"
    text = FLOWER_APP_TOML.format(version=__version__, config=_toml_table(SERVER_RUN_CONFIG))
    write_atomic(path, text.encode(), overwrite=False)
    return path


def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``securefed deploy agent`` (see
    :meth:`securefed.runtime.flower.agent.AgentSettings.from_args`)."""
    parser.add_argument("--config", required=True, help="the run configuration (run.toml)")
    parser.add_argument("--roster", required=True, help="the pinned roster (roster.toml)")
    parser.add_argument("--key", required=True, help="this institution's identity key file")
    protection = parser.add_mutually_exclusive_group(required=True)
    protection.add_argument(
        "--passphrase-env", metavar="VAR", help="the environment variable holding its passphrase"
    )
    protection.add_argument(
        "--unsafe-plaintext-key",
        action="store_true",
        help="the key file is unencrypted (throwaway test keys; ledgered as a hazard)",
    )
    parser.add_argument("--party", required=True, help="this institution's party id")
    parser.add_argument(
        "--data",
        help="seed-layout directory with its tenant (default: the run configuration's "
        "[data] directory)",
    )
    parser.add_argument("--tenant", required=True, type=int, help="its tenant index in --data")
    parser.add_argument(
        "--num-classes", required=True, type=int, help="classes of the joint model (all agree)"
    )
    parser.add_argument(
        "--state", required=True, help="its state directory (ledger, accountant, model)"
    )
