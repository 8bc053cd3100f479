"""Start and stop a whole deployment on one machine: SuperLink, SuperNodes, agents, the run.

:class:`LocalDeployment` is what the integration test, ``securefed bench deploy`` and a first
loopback trial use (docs/deploy.md walks through the same steps by hand). Every process runs in
its own session (process group), with its output in ``<root>/logs/``; :meth:`close` stops them
all (SIGTERM, then SIGKILL after a grace period), so nothing is left running. Flower's own
state lives in ``<root>/flwr-home`` (``FLWR_HOME``), never in the user's home directory.

TLS is on between every SuperNode and the SuperLink and between ``flwr`` and the SuperLink;
the certificates are throwaway ones from :mod:`.certs` unless given.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from securefed.errors import ConfigError
from securefed.runtime.flower.agent import write_flower_app
from securefed.runtime.flower.certs import TestCertificates, write_test_certificates
from securefed.runtime.flower.relay import socket_path

__all__ = ["InstitutionSpec", "LocalDeployment", "free_port"]

STOP_GRACE_S = 10.0
_REGISTERED = "SuperNode ID:"  # what flower-supernode logs once the SuperLink has registered it


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_port(port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not open port {port} within {timeout:.0f} s")


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux ``/proc``). Flower starts some helpers in new
    sessions (SuperExec), so a process-group kill alone would leave them running."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


@dataclass(frozen=True, slots=True)
class InstitutionSpec:
    """One institution: its party id, key file, and its tenant in a seed-layout directory."""

    party: str
    key: Path
    data: Path
    tenant: int
    state: Path


class LocalDeployment:
    """A SuperLink, one SuperNode + agent per institution, and a run, all on 127.0.0.1.

    ``common`` holds the paths every party shares: ``config`` (run TOML), ``roster``; plus
    ``num_classes``. Keys are throwaway unencrypted test keys (``--unsafe-plaintext-key``),
    and ``reproducible`` seeds the DP noise from the run seed (TESTS ONLY): both are ledgered
    as hazards by every party.
    """

    def __init__(
        self,
        root: Path,
        *,
        config: Path,
        roster: Path,
        num_classes: int,
        reproducible: bool = False,
        certificates: TestCertificates | None = None,
    ) -> None:
        self.root = Path(root)
        self.logs = self.root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.config, self.roster, self.num_classes = config, roster, num_classes
        self.reproducible = reproducible
        self.certs = certificates or write_test_certificates(self.root / "certs")
        self.home = self.root / "flwr-home"
        self.home.mkdir(exist_ok=True)
        self.port = free_port()
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._bin = Path(sys.executable).parent
        self.env = {
            **os.environ,
            "FLWR_HOME": str(self.home),
            # Flower starts flower-superexec / flwr-serverapp / flwr-clientapp from PATH.
            "PATH": os.pathsep.join([str(self._bin), os.environ.get("PATH", "")]),
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        }
        (self.home / "config.toml").write_text(
            "[superlink]\n"
            'default = "securefed"\n\n'
            "[superlink.securefed]\n"
            f'address = "127.0.0.1:{self.port}"\n'
            f"root-certificates = {json.dumps(str(self.certs.ca_certificate))}\n",
            encoding="utf-8",
        )
        self.app = self.root / "app"
        if not (self.app / "pyproject.toml").exists():
            write_flower_app(self.app)

    # -- processes -------------------------------------------------------------------------

    def _executable(self, name: str) -> str:
        path = self._bin / name
        if not path.exists():
            found = shutil.which(name)
            if found is None:
                raise ConfigError(f"{name} not found: install securefed[flower]")
            return found
        return str(path)

    def _start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        if name in self._processes and self._processes[name].poll() is None:
            raise ConfigError(f"{name} is already running")
        log = (self.logs / f"{name}.log").open("ab")
        process = subprocess.Popen(  # noqa: S603 -- our own executables, arguments we built
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.root,
            start_new_session=True,
        )
        log.close()
        self._processes[name] = process
        return process

    def start_superlink(self, timeout: float = 60.0) -> None:
        self._start(
            "superlink",
            [
                self._executable("flower-superlink"),
                "--ssl-ca-certfile",
                str(self.certs.ca_certificate),
                "--ssl-certfile",
                str(self.certs.server_certificate),
                "--ssl-keyfile",
                str(self.certs.server_key),
                "--port",
                str(self.port),
                "--disable-runtime-dependency-installation",
            ],
        )
        _wait_for_port(self.port, timeout, "the SuperLink")

    def start_institution(self, spec: InstitutionSpec, timeout: float = 120.0) -> None:
        """The institution's agent (waits for its socket), then its SuperNode (waits until the
        SuperLink has registered it, so the coordinator's next hello reaches it)."""
        socket_file = socket_path(spec.state)
        with contextlib.suppress(FileNotFoundError):
            socket_file.unlink()
        argv = [
            sys.executable,
            "-m",
            "securefed.cli",
            "deploy",
            "agent",
            "--config",
            str(self.config),
            "--roster",
            str(self.roster),
            "--key",
            str(spec.key),
            "--unsafe-plaintext-key",
            "--party",
            spec.party,
            "--data",
            str(spec.data),
            "--tenant",
            str(spec.tenant),
            "--num-classes",
            str(self.num_classes),
            "--state",
            str(spec.state),
        ]
        if self.reproducible:
            argv.append("--reproducible-unsafe")
        agent = self._start(f"agent-{spec.party}", argv)
        deadline = time.monotonic() + timeout
        while not socket_file.exists():
            if agent.poll() is not None:
                raise ConfigError(
                    f"the agent of {spec.party} exited ({agent.returncode}); see "
                    f"{self.logs / f'agent-{spec.party}.log'}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"the agent of {spec.party} did not start in {timeout:.0f} s")
            time.sleep(0.2)
        registered = self._log_count(f"supernode-{spec.party}", _REGISTERED)
        self._start(
            f"supernode-{spec.party}",
            [
                self._executable("flower-supernode"),
                "--root-certificates",
                str(self.certs.ca_certificate),
                "--superlink",
                f"127.0.0.1:{self.port}",
                "--node-config",
                f"state-dir={json.dumps(str(spec.state))}",
                "--port",
                str(free_port()),
            ],
        )
        while self._log_count(f"supernode-{spec.party}", _REGISTERED) <= registered:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the SuperNode of {spec.party} did not register in time")
            time.sleep(0.2)

    def _log_count(self, name: str, marker: str) -> int:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace").count(marker) if path.exists() else 0

    def kill_institution(self, party: str) -> None:
        """SIGKILL the institution's SuperNode (with its ClientApps) and agent: a crash."""
        for name in (f"supernode-{party}", f"agent-{party}"):
            process = self._processes.get(name)
            if process is not None and process.poll() is None:
                helpers = _descendants(process.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                _kill(helpers)
                process.wait(timeout=STOP_GRACE_S)

    def submit(self, run_config: Mapping[str, str | float | bool]) -> str:
        """``flwr run`` the app with ``run_config`` overrides; returns what flwr printed."""
        pairs = " ".join(f"{key}={_toml(value)}" for key, value in run_config.items())
        result = subprocess.run(  # noqa: S603 -- our own executable, arguments we built
            [self._executable("flwr"), "run", str(self.app), "securefed", "-c", pairs],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        (self.logs / "flwr-run.log").write_text(result.stdout + result.stderr, encoding="utf-8")
        if result.returncode != 0:
            raise ConfigError(f"flwr run failed ({result.returncode}): {result.stderr[-2000:]}")
        return result.stdout

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL after a grace period), and every helper
        process they started."""
        helpers = [pid for p in self._processes.values() for pid in _descendants(p.pid)]
        for process in self._processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in self._processes.values():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=STOP_GRACE_S)
        for process in self._processes.values():  # children left in a group: make sure
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        _kill(helpers)

    def __enter__(self) -> LocalDeployment:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _toml(value: str | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(float(value))
