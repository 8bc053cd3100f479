"""An institution's agent process: ``securefed deploy agent`` (docs/deploy.md).

It loads the institution's own tenant from a seed-layout directory, its identity key, the
pinned roster and the run configuration every party holds; opens (or continues) its ledger and
accountant under ``--state``; and answers deployment messages on ``<state>/agent.sock`` until
SIGTERM or SIGINT. The SuperNode next to it is started with
``--node-config "state-dir='<state>'"`` so that its ClientApp relays to this socket.

:func:`write_flower_app` writes the Flower App directory that ``flwr run`` submits: only a
``pyproject.toml`` naming securefed's ServerApp and ClientApp, which the SuperLink and the
SuperNodes import from the securefed installed beside them (no code travels in the FAB).
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from securefed import __version__
from securefed.data import load_tenants
from securefed.files import write_atomic
from securefed.runtime.config import load_run_config
from securefed.runtime.flower.identity import load_identity_key
from securefed.runtime.flower.institution import Institution, serve
from securefed.secagg.roster import load_roster

__all__ = [
    "SERVER_RUN_CONFIG",
    "AgentSettings",
    "build_institution",
    "run_agent",
    "write_flower_app",
]


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """What ``securefed deploy agent`` was given (see ``securefed deploy agent --help``)."""

    config: Path
    roster: Path
    key: Path
    passphrase_env: str | None
    unsafe_plaintext_key: bool
    party: str
    data: Path
    tenant: int
    num_classes: int
    state: Path
    reproducible_unsafe: bool = False


def build_institution(settings: AgentSettings) -> Institution:
    """The institution of ``settings`` (its ledger opened, its accountant loaded).

    Raises ConfigError / DataFormatError / CryptoError with the reason (bad files, a key that is
    not the party's key in the roster, a tenant index absent from the data directory).
    """
    (tenant,) = load_tenants(settings.data, indices=[settings.tenant])
    return Institution(
        config=load_run_config(settings.config),
        roster=load_roster(settings.roster),
        identity=load_identity_key(
            settings.key,
            passphrase_env=settings.passphrase_env,
            unsafe_plaintext=settings.unsafe_plaintext_key,
        ),
        party_id=settings.party,
        tenant=tenant,
        num_classes=settings.num_classes,
        state_dir=settings.state,
        reproducible=settings.reproducible_unsafe,
        unsafe_key=settings.unsafe_plaintext_key,
    )


def run_agent(settings: AgentSettings) -> None:
    """Serve until SIGTERM or SIGINT; the ledger is closed on the way out."""
    institution = build_institution(settings)
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        serve(institution, stop=lambda: stopping)
    finally:
        institution.close()


#: The Flower run-configuration keys the ServerApp reads, with their defaults (docs/deploy.md);
#: ``flwr run APP -c 'key="value" ...'`` overrides them.
SERVER_RUN_CONFIG: dict[str, str | float | bool] = {
    "run-config": "",  # the securefed run TOML every party holds
    "roster": "",  # the pinned roster.toml
    "server-key": "",  # the server's identity key file
    "passphrase-env": "SECUREFED_SERVER_PASSPHRASE",  # the variable holding its passphrase
    "unsafe-plaintext-key": False,  # throwaway test keys only (ledgered as a hazard)
    "state-dir": "",  # the coordinator's directory: ledger, metrics.json, progress.jsonl
    "hello-timeout": 20.0,
    "train-timeout": 600.0,
    "phase-timeout": 60.0,
    "join-timeout": 120.0,
    "pause-before": "",  # TESTS ONLY: "1:mask,2:hello" waits for state-dir/resume-<r>-<phase>
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
