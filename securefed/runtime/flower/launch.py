"""Start and stop a whole deployment on one machine: SuperLink, SuperNodes, agents, the run.

:class:`LocalDeployment` is what the integration test, ``securefed bench deploy`` and a first
loopback trial use (docs/deploy.md walks through the same steps by hand). Every process runs in
its own session (process group), with its output in ``<root>/logs/``; :meth:`close` stops them
all (SIGTERM, then SIGKILL after a grace period), so nothing is left running. Flower's own
state lives in ``<root>/flwr-home`` (``FLWR_HOME``), never in the user's home directory.

TLS is on between every SuperNode and the SuperLink and between ``flwr`` and the SuperLink;
the certificates are throwaway ones from :mod:`.certs` unless given. Each SuperNode's SuperExec
looks for new ClientApp tasks every :data:`TASK_POLL_INTERVAL_S` (Flower's default: 1 s).

:func:`write_test_parties` writes throwaway unencrypted identity keys and their roster for such a
trial.
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from securefed.crypto.cleartext import export_unencrypted_signing_key_unsafe
from securefed.errors import ConfigError
from securefed.runtime.flower.certs import TestCertificates, write_test_certificates
from securefed.runtime.flower.deployment import write_flower_app
from securefed.runtime.flower.relay import socket_path
from securefed.secagg.federation import make_federation
from securefed.secagg.roster import PublicIdentity, Roster, save_identity_files, save_roster

__all__ = [
    "PRODUCTION_AGENT",
    "TASK_POLL_INTERVAL_S",
    "InstitutionSpec",
    "LocalDeployment",
    "free_port",
    "write_test_parties",
]

STOP_GRACE_S = 10.0
#: How often each SuperNode's SuperExec asks for a new ClientApp task (Flower's
#: ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``; its default, 1 s, would add up to 1 s per exchange).
TASK_POLL_INTERVAL_S = 0.05
#: The production agent: ``securefed deploy agent`` (its arguments follow).
PRODUCTION_AGENT: tuple[str, ...] = (sys.executable, "-m", "securefed.cli", "deploy", "agent")
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


def write_test_parties(root: Path, clients: int) -> Roster:
    """Throwaway unencrypted identity keys ``root/keys/<party>.key`` (``server``, ``bank-0``,
    ...) and their roster ``root/roster.toml`` (TESTS AND BENCHMARKS ONLY: every party then
    ledgers the unencrypted key as a hazard)."""
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


@dataclass(frozen=True, slots=True)
class InstitutionSpec:
    """One institution: its party id, key file, its tenant in a seed-layout directory, its
    state directory, and arguments added to the agent's command line (a test agent's)."""

    party: str
    key: Path
    data: Path
    tenant: int
    state: Path
    extra_args: tuple[str, ...] = ()


class LocalDeployment:
    """A SuperLink, one SuperNode + agent per institution, and a run, all on 127.0.0.1.

    ``config`` (run TOML) and ``roster`` are the paths every party shares, ``num_classes``
    the model's output size. Keys are throwaway unencrypted test keys
    (``--unsafe-plaintext-key``, ledgered as a hazard by every party). ``agent`` is the
    command that starts an agent, before its arguments: the production ``securefed deploy
    agent`` by default, or the test agent (``python -m securefed.testing.agent``, which takes
    ``--seed``, ``--crash-at`` and ``--misbehave`` through :attr:`InstitutionSpec.extra_args`).
    """

    def __init__(
        self,
        root: Path,
        *,
        config: Path,
        roster: Path,
        num_classes: int,
        agent: Sequence[str] = PRODUCTION_AGENT,
        certificates: TestCertificates | None = None,
    ) -> None:
        self.root = Path(root)
        self.logs = self.root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.config, self.roster, self.num_classes = config, roster, num_classes
        self.agent = tuple(agent)
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
            "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": str(TASK_POLL_INTERVAL_S),
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

    def start_institution(
        self, spec: InstitutionSpec, timeout: float = 120.0, *, supernode: bool = True
    ) -> None:
        """The institution's agent (waits for its socket), then -- unless ``supernode`` is
        False (an agent restarted beside a SuperNode that kept running) -- its SuperNode (waits
        until the SuperLink has registered it, so that the coordinator's next join reaches
        it)."""
        self.start_agent(spec, timeout)
        if supernode:
            self.start_supernode(spec, timeout)

    def start_institutions(self, specs: Sequence[InstitutionSpec], timeout: float = 180.0) -> None:
        """Every institution of ``specs``: all agents at once (each loads its data and model on
        its own), then all SuperNodes; returns once every SuperNode is registered."""
        for spec in specs:
            self._launch_agent(spec)
        for spec in specs:
            self._await_agent(spec, timeout)
        before = {spec.party: self._launch_supernode(spec) for spec in specs}
        for spec in specs:
            self._await_supernode(spec, before[spec.party], timeout)

    def start_agent(self, spec: InstitutionSpec, timeout: float = 120.0) -> None:
        """The institution's agent; returns once it listens on its socket."""
        self._launch_agent(spec)
        self._await_agent(spec, timeout)

    def _launch_agent(self, spec: InstitutionSpec) -> None:
        socket_file = socket_path(spec.state)
        with contextlib.suppress(FileNotFoundError):
            socket_file.unlink()
        argv = [
            *self.agent,
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
            *spec.extra_args,
        ]
        self._start(f"agent-{spec.party}", argv)

    def _await_agent(self, spec: InstitutionSpec, timeout: float) -> None:
        agent = self._processes[f"agent-{spec.party}"]
        socket_file = socket_path(spec.state)
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

    def start_supernode(self, spec: InstitutionSpec, timeout: float = 120.0) -> None:
        """The institution's SuperNode; returns once the SuperLink has registered it."""
        self._await_supernode(spec, self._launch_supernode(spec), timeout)

    def _launch_supernode(self, spec: InstitutionSpec) -> int:
        """Start the SuperNode; how many registrations its log held before."""
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
        return registered

    def _await_supernode(self, spec: InstitutionSpec, registered: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._log_count(f"supernode-{spec.party}", _REGISTERED) <= registered:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the SuperNode of {spec.party} did not register in time")
            time.sleep(0.2)

    def _log_count(self, name: str, marker: str) -> int:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace").count(marker) if path.exists() else 0

    def wait_for_agent_exit(self, party: str, timeout: float) -> int:
        """Wait until the agent of ``party`` has exited; its exit status. TimeoutError if it
        is still running after ``timeout`` seconds."""
        process = self._processes[f"agent-{party}"]
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"the agent of {party} still runs after {timeout:.0f} s") from None

    def finished(self, name: str) -> bool:
        """Whether the process ``name`` (``superlink``, ``agent-<party>``, ...) has exited."""
        process = self._processes.get(name)
        return process is not None and process.poll() is not None

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
