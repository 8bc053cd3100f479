"""The deployment's pieces, one at a time: the local socket and the agent that answers on it,
certificates, keys, the Flower App file and the ServerApp's settings, the refusal of what only
the simulation runs, the ServerApp's exchange on a (fake) Flower grid, the ClientApp's echo, and
the test agent's crash switch. Flower is needed only for the grid and the ClientApp."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from securefed.audit import GENESIS_HASH, EventType, Head, ledger_path
from securefed.audit.entry import parse_entry
from securefed.cli import main as securefed_main
from securefed.crypto.cleartext import export_unencrypted_signing_key_unsafe
from securefed.crypto.keyfile import encrypt_signing_key
from securefed.data import PartitionConfig, Scheme, prepare
from securefed.errors import ConfigError, DecryptionError, LocalProtocolError, RemoteProtocolError
from securefed.runtime.config import (
    DataConfig,
    DPSettings,
    ModelName,
    PersonalizationMode,
    PersonalizeConfig,
    RunConfig,
    SegmentSource,
    SimilaritySource,
)
from securefed.runtime.engine import messages as m
from securefed.runtime.engine.coordinator import Wait
from securefed.runtime.engine.settings import EngineSettings
from securefed.runtime.engine.signing import sign_joined, verified_party
from securefed.runtime.flower.agent import build_institution, load_parts, serve
from securefed.runtime.flower.bench import deployable_config
from securefed.runtime.flower.certs import write_test_certificates
from securefed.runtime.flower.deployment import (
    MODEL_FILE,
    SERVER_RUN_CONFIG,
    check_deployable,
    write_flower_app,
)
from securefed.runtime.flower.identity import load_identity_key
from securefed.runtime.flower.launch import write_test_parties
from securefed.runtime.flower.relay import ask, read_frame, socket_path, write_frame
from securefed.runtime.flower.server import ServerSettings, is_join_request, run_server
from securefed.testing import make_federation
from securefed.testing.agent import CRASH_STATUS, CrashPoint, crashing, request_round
from securefed.testing.loopback import DeploymentFiles, LoopbackExchange

N = 4


# -- the local socket --------------------------------------------------------------------------


def test_the_local_socket_carries_one_framed_request(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path(tmp_path)))
    listener.listen(1)

    def echo() -> None:
        conn, _ = listener.accept()
        with conn:
            write_frame(conn, read_frame(conn)[::-1])

    thread = threading.Thread(target=echo)
    thread.start()
    assert ask(tmp_path, b"request" * 1000, timeout=10) == (b"request" * 1000)[::-1]
    thread.join()
    listener.close()
    with pytest.raises(FileNotFoundError):
        ask(tmp_path / "nobody", b"x", timeout=1)


def _serving(state: Path, handler: Any) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(state, handler), kwargs={"stop": stop.is_set})
    thread.start()
    deadline = time.monotonic() + 10
    while not socket_path(state).exists():
        assert time.monotonic() < deadline, "the agent did not listen"
        time.sleep(0.01)
    return thread, stop


def test_the_agent_socket_answers_each_request_and_reports_local_failures(tmp_path: Path) -> None:
    def handler(data: bytes) -> bytes:
        if data == b"disk":
            raise LocalProtocolError("the disk is full")
        return data.upper()

    thread, stop = _serving(tmp_path, handler)
    try:
        assert socket_path(tmp_path).stat().st_mode & 0o077 == 0  # only the institution's user
        assert ask(tmp_path, b"one", timeout=5) == b"ONE"
        assert ask(tmp_path, b"two", timeout=5) == b"TWO"  # one request per connection
        refused = m.decode(ask(tmp_path, b"disk", timeout=5))
        assert refused == m.Refused("LocalProtocolError", "the disk is full")
        assert ask(tmp_path, b"three", timeout=5) == b"THREE"  # and it goes on
    finally:
        stop.set()
        thread.join()
    assert not socket_path(tmp_path).exists()


# -- files every party reads -------------------------------------------------------------------


def test_test_certificates_chain_to_their_ca_and_name_the_loopback(tmp_path: Path) -> None:
    files = write_test_certificates(tmp_path)
    ca = x509.load_pem_x509_certificate(files.ca_certificate.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_certificate.read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert str(names.get_values_for_type(x509.IPAddress)[0]) == "127.0.0.1"
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert files.server_key.stat().st_mode & 0o077 == 0
    with pytest.raises(ConfigError):
        write_test_certificates(tmp_path)  # never overwrites


def test_identity_keys_need_a_passphrase_or_an_explicit_unsafe_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = make_federation(3).client_keys[0]
    encrypted, clear = tmp_path / "e.key", tmp_path / "c.key"
    encrypted.write_bytes(encrypt_signing_key(key, b"a long enough passphrase"))
    clear.write_bytes(export_unencrypted_signing_key_unsafe(key))
    monkeypatch.setenv("SF_TEST_PASS", "a long enough passphrase")
    loaded = load_identity_key(encrypted, passphrase_env="SF_TEST_PASS")  # noqa: S106 -- a variable name
    assert loaded.verify_key() == key.verify_key()
    assert load_identity_key(clear, passphrase_env=None, unsafe_plaintext=True).verify_key() == (
        key.verify_key()
    )
    monkeypatch.setenv("SF_TEST_PASS", "a wrong but long passphrase")
    with pytest.raises(DecryptionError):
        load_identity_key(encrypted, passphrase_env="SF_TEST_PASS")  # noqa: S106 -- a variable name
    with pytest.raises(ConfigError, match="give the passphrase"):
        load_identity_key(clear, passphrase_env=None)
    with pytest.raises(ConfigError, match="cannot read"):
        load_identity_key(tmp_path / "absent.key", passphrase_env="SF_TEST_PASS")  # noqa: S106 -- a variable name


def test_the_flower_app_names_securefeds_apps_and_every_setting(tmp_path: Path) -> None:
    document = tomllib.loads(write_flower_app(tmp_path).read_text())
    components = document["tool"]["flwr"]["app"]["components"]
    assert components == {
        "serverapp": "securefed.runtime.flower.server_app:app",
        "clientapp": "securefed.runtime.flower.client_app:app",
    }
    assert document["tool"]["flwr"]["app"]["config"] == SERVER_RUN_CONFIG
    with pytest.raises(ConfigError):
        write_flower_app(tmp_path)
    assert ServerSettings.from_run_config(
        {"run-config": "r.toml", "roster": "x", "server-key": "k", "state-dir": "s"}
    ) == ServerSettings(
        run_config=Path("r.toml"),
        roster=Path("x"),
        server_key=Path("k"),
        passphrase_env="SECUREFED_SERVER_PASSPHRASE",  # noqa: S106 -- a variable name
        unsafe_plaintext_key=False,
        state_dir=Path("s"),
        timeouts={Wait.JOIN: 20.0, Wait.TRAIN: 600.0, Wait.PHASE: 60.0},
    )


def test_the_server_app_refuses_unknown_or_missing_settings() -> None:
    paths = {"run-config": "r.toml", "roster": "x", "server-key": "k", "state-dir": "s"}
    for old in ("hello-timeout", "pause-before"):  # an App written by an older version
        with pytest.raises(ConfigError, match="deploy app"):
            ServerSettings.from_run_config({**paths, old: 1.0})
    with pytest.raises(ConfigError, match="state-dir"):
        ServerSettings.from_run_config({**paths, "state-dir": ""})
    with pytest.raises(ConfigError, match="phase-timeout"):
        ServerSettings.from_run_config({**paths, "phase-timeout": "soon"})
    settings = ServerSettings.from_run_config({**paths, "unsafe-plaintext-key": True})
    assert settings.passphrase_env is None
    assert settings.unsafe_plaintext_key


# -- what a deployment runs --------------------------------------------------------------------

LISTED = PersonalizeConfig(segments=(0, 0, 0, 0))
LEARNED = PersonalizeConfig(segments=SegmentSource.LEARNED, groups=1)
STATISTIC = SimilaritySource.STATISTIC


def _base(**changes: Any) -> RunConfig:
    config = RunConfig(
        mode=PersonalizationMode.GROUP,
        data=DataConfig(directory="/data", model=ModelName.MLP),
        personalize=LISTED,
    )
    return dataclasses.replace(config, **changes)


def test_every_mode_deploys() -> None:
    deployable = [
        _base(),
        _base(dp=None, seed=11, rounds=3, value_range=4.0),
        _base(personalize=LEARNED),
        _base(personalize=dataclasses.replace(LEARNED, similarity=STATISTIC)),
        _base(data=DataConfig()),  # no [data] at all: each agent names its own (--data)
        *(
            _base(mode=mode, personalize=PersonalizeConfig())
            for mode in (PersonalizationMode.LOCAL, PersonalizationMode.FEDAVG)
        ),
        *(
            _base(mode=mode, personalize=PersonalizeConfig(similarity=similarity))
            for mode in (PersonalizationMode.FEDAMP, PersonalizationMode.HEURFEDAMP)
            for similarity in SimilaritySource
        ),
    ]
    for config in deployable:
        check_deployable(config)


@pytest.mark.parametrize(
    ("config", "why"),
    [
        (_base(secure=False), "secure = false"),
        (_base(baselines=(PersonalizationMode.LOCAL,)), "baselines"),
        (_base(dropout_rate=0.1), "dropout_rate"),
        (_base(data=DataConfig(source="bundled", tenants=4)), "data.tenants"),
        (_base(data=DataConfig(groups=2)), "data.groups"),
        (_base(data=DataConfig(source="/elsewhere.npz")), "data.source"),
        (_base(data=DataConfig(samples_per_tenant=50)), "data.samples_per_tenant"),
        (_base(data=DataConfig(partition_seed=1)), "data.partition_seed"),
        (_base(personalize=PersonalizeConfig()), '"declared"'),
        (
            _base(
                mode=PersonalizationMode.FEDAVG, personalize=PersonalizeConfig(similarity=STATISTIC)
            ),
            '"statistic"',
        ),
    ],
)
def test_what_only_the_simulation_runs_is_refused_with_the_reason(
    config: RunConfig, why: str
) -> None:
    with pytest.raises(ConfigError, match=why):
        check_deployable(config)


def test_all_refusals_are_named_at_once() -> None:
    config = _base(secure=False, baselines=(PersonalizationMode.LOCAL,), dropout_rate=0.1)
    with pytest.raises(ConfigError) as caught:
        check_deployable(config)
    assert all(key in str(caught.value) for key in ("secure", "baselines", "dropout_rate"))


@pytest.fixture(scope="module")
def parties(tmp_path_factory: pytest.TempPathFactory) -> DeploymentFiles:
    root = tmp_path_factory.mktemp("parties")
    prepare(
        "bundled",
        out=root / "data",
        config=PartitionConfig(tenants=N, groups=1, scheme=Scheme.IID, samples_per_tenant=60),
    )
    roster = write_test_parties(root, N)
    config = root / "run.toml"
    config.write_text(
        dataclasses.replace(
            _base(data=DataConfig(model=ModelName.MLP)),
            dp=DPSettings(target_epsilon=4.0, delta=1e-3),
            rounds=2,
        ).to_toml()
    )
    parties = tuple(c.party_id for c in roster.clients)
    return DeploymentFiles(config, root / "roster.toml", root / "keys", root / "data", 10, parties)


def _with_config(files: DeploymentFiles, tmp_path: Path, config: RunConfig) -> DeploymentFiles:
    path = tmp_path / "run.toml"
    path.write_text(config.to_toml())
    return dataclasses.replace(files, config=path)


def test_the_server_and_the_agent_refuse_alike_before_anything_starts(
    parties: DeploymentFiles, tmp_path: Path
) -> None:
    files = _with_config(parties, tmp_path, _base(baselines=(PersonalizationMode.FEDAVG,)))
    with pytest.raises(ConfigError, match="baselines"):
        load_parts(files.agent(0, tmp_path / "bank-0"))
    with pytest.raises(ConfigError, match="baselines"):
        run_server(files.server(tmp_path / "coordinator"), LoopbackExchange())
    assert not (tmp_path / "bank-0").exists()
    assert not (tmp_path / "coordinator").exists()


def test_an_agent_needs_its_own_key_and_a_data_directory(
    parties: DeploymentFiles, tmp_path: Path
) -> None:
    wrong_key = dataclasses.replace(
        parties.agent(0, tmp_path / "a"), key=parties.keys / "bank-1.key"
    )
    with pytest.raises(ConfigError, match="not bank-0's key"):
        load_parts(wrong_key)
    no_data = dataclasses.replace(parties.agent(0, tmp_path / "a"), data=None)
    with pytest.raises(ConfigError, match="data directory"):
        load_parts(no_data)  # the run configuration names none either


def test_the_agent_answers_a_signed_join_over_its_socket(
    parties: DeploymentFiles, tmp_path: Path
) -> None:
    settings = parties.agent(2, tmp_path / "bank-2")
    institution = build_institution(settings)
    thread, stop = _serving(settings.state, institution.handle_bytes)
    try:
        join = m.Join(os.urandom(32), node=7)
        reply = m.decode(ask(settings.state, m.encode(join), timeout=30))
        assert isinstance(reply, m.Joined)
        roster = load_parts(settings).roster
        assert verified_party(roster, join, reply) == 2
        assert reply.head.actor == "bank-2"
        assert reply.info.train_samples > 0
        refused = m.decode(ask(settings.state, b"not an engine message", timeout=30))
        assert isinstance(refused, m.Refused)
        assert refused.error == "RemoteProtocolError"
    finally:
        stop.set()
        thread.join()
        institution.close()
    assert settings.state.stat().st_mode & 0o077 == 0  # the state directory is the agent's own


def test_a_fresh_ledger_in_another_runs_state_directory_is_refused(
    parties: DeploymentFiles, tmp_path: Path
) -> None:
    state = tmp_path / "bank-0"
    state.mkdir()
    (state / MODEL_FILE).write_bytes(b"left over")
    with pytest.raises(ConfigError, match="another run's state"):
        build_institution(parties.agent(0, state))


# -- the ServerApp's exchange on a Flower grid -------------------------------------------------


class FakeGrid:
    """Nodes 1..3; node 2 answers with an error, node 3 never answers, node 1 answers after a
    few pulls (and a stray reply for a message nobody sent comes along)."""

    def __init__(self) -> None:
        self.pushed: list[Any] = []
        self.pulls = 0

    def get_node_ids(self) -> Iterable[int]:
        return [3, 1, 2]

    def push_messages(self, messages: Iterable[Any]) -> list[str]:
        self.pushed = list(messages)
        return [f"id-{msg.metadata.dst_node_id}" for msg in self.pushed]

    def pull_messages(self, message_ids: Iterable[str]) -> list[Any]:
        self.pulls += 1
        wanted = set(message_ids)
        out = [_reply("id-9", 9, b"stray")]
        if self.pulls >= 3 and "id-1" in wanted:
            out.append(_reply("id-1", 1, b"answer-" + _request(self.pushed, 1)))
        if "id-2" in wanted:
            out.append(_reply("id-2", 2, None, error=True))
        return out


def _reply(to: str, src: int, data: bytes | None, *, error: bool = False) -> Any:
    from flwr.app import ConfigRecord, RecordDict  # noqa: PLC0415 - flwr is optional

    content = RecordDict({"securefed": ConfigRecord({"reply": data})}) if data is not None else None
    return SimpleNamespace(
        metadata=SimpleNamespace(reply_to_message_id=to, src_node_id=src),
        has_error=lambda: error,
        content=content or RecordDict(),
    )


def _request(pushed: list[Any], node: int) -> bytes:
    (message,) = [msg for msg in pushed if msg.metadata.dst_node_id == node]
    data = message.content["securefed"]["request"]
    assert isinstance(data, bytes)
    return data


@pytest.fixture
def flower_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """What Flower sets in a ServerApp or ClientApp process before messages can be made."""
    pytest.importorskip("flwr")
    from flwr.supercore.task_identity import TaskIdentity  # noqa: PLC0415

    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)


@pytest.mark.usefixtures("flower_task")
def test_the_grid_exchange_sends_one_query_per_node_and_polls_for_the_replies() -> None:
    from securefed.runtime.flower.server_app import GridExchange  # noqa: PLC0415

    grid = FakeGrid()
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    exchange = GridExchange(grid, poll_interval=0.25, clock=lambda: now[0], sleep=sleep)  # type: ignore[arg-type]
    assert exchange.nodes() == [1, 2, 3]
    replies = exchange.exchange({1: b"a", 2: b"b", 3: b"c"}, timeout=2.0)
    assert replies == {1: b"answer-a"}  # the error and the silent node are missing
    assert {msg.metadata.message_type for msg in grid.pushed} == {"query"}
    assert sleeps[:2] == [0.25, 0.25]
    assert sum(sleeps) == pytest.approx(2.0)
    assert exchange.nodes() == [1, 3]  # the failed node is left out until the next exchange
    assert exchange.exchange({}, timeout=1.0) == {}
    assert exchange.nodes() == [1, 2, 3]


@pytest.mark.usefixtures("flower_task")
def test_a_silent_node_holds_an_exchange_only_as_long_as_a_join_may_take() -> None:
    from securefed.runtime.flower.server_app import GridExchange  # noqa: PLC0415

    grid = FakeGrid()
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    exchange = GridExchange(
        grid,  # type: ignore[arg-type]
        poll_interval=0.1,
        join_timeout=0.5,
        clock=lambda: now[0],
        sleep=sleep,
    )
    train, join = m.encode(m.Train(1)), m.encode(m.Join(os.urandom(32)))
    assert is_join_request(join)
    assert not is_join_request(train)
    replies = exchange.exchange({1: train, 3: join}, timeout=60.0)
    assert replies == {1: b"answer-" + train}
    assert now[0] == pytest.approx(0.5)  # not the 60 s an institution's training may take
    now[0] = 0.0
    assert exchange.exchange({1: train, 3: train}, timeout=3.0) == {1: b"answer-" + train}
    assert now[0] == pytest.approx(3.0)  # a silent institution is waited for


@pytest.mark.usefixtures("flower_task")
def test_the_client_app_answers_an_echo_itself_and_relays_the_rest(tmp_path: Path) -> None:
    from flwr.app import ConfigRecord, Context, Message, RecordDict  # noqa: PLC0415

    from securefed.runtime.flower.client_app import relay  # noqa: PLC0415

    def query(data: bytes) -> Message:
        record = RecordDict({"securefed": ConfigRecord({"request": data})})
        return Message(record, dst_node_id=5, message_type="query")

    nowhere = Context(run_id=1, node_id=5, node_config={}, state=RecordDict(), run_config={})
    assert relay(query(b""), nowhere).content["securefed"]["reply"] == b""  # no agent needed
    with pytest.raises(ConfigError, match="state-dir"):
        relay(query(b"x"), nowhere)
    thread, stop = _serving(tmp_path, lambda data: data[::-1])
    try:
        node = Context(
            run_id=1,
            node_id=5,
            node_config={"state-dir": str(tmp_path)},
            state=RecordDict(),
            run_config={},
        )
        assert relay(query(b"abc"), node).content["securefed"]["reply"] == b"cba"
    finally:
        stop.set()
        thread.join()


# -- the test agent ----------------------------------------------------------------------------


def test_the_production_agent_has_no_test_switches(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        securefed_main(["deploy", "agent", "--help"])
    usage = capsys.readouterr().out
    assert "--state" in usage
    for switch in ("--reproducible", "--seed", "--crash-at", "--misbehave"):
        assert switch not in usage


def _train(round_: int) -> m.Train:
    return m.Train(round_)


def test_crash_points_name_a_round_a_kind_and_a_step_phase() -> None:
    mask = CrashPoint.parse("1:step:mask")
    assert mask == CrashPoint(1, m.Kind.STEP, m.StepPhase.MASK)
    assert mask.matches(m.Step(1, m.StepPhase.MASK, ()))
    assert not mask.matches(m.Step(2, m.StepPhase.MASK, ()))
    assert not mask.matches(m.Step(1, m.StepPhase.CONFIRM, ()))
    assert CrashPoint.parse("2:train").matches(_train(2))
    assert not CrashPoint.parse("2:train").matches(_train(1))
    join = CrashPoint.parse("0:join")
    assert join.matches(m.Join(os.urandom(32)))
    assert request_round(m.Seal(())) == 0
    for bad in ("1", "x:step", "1:stepp", "1:step:masks", "1:train:mask", "-1:train"):
        with pytest.raises(ConfigError):
            CrashPoint.parse(bad)


def test_the_crash_switch_fires_before_anything_is_answered() -> None:
    answered: list[bytes] = []

    class Died(Exception):
        pass

    def die() -> None:
        raise Died

    def handler(data: bytes) -> bytes:
        answered.append(data)
        return b"ok"

    crash = crashing(handler, CrashPoint.parse("2:train"), die=die)
    assert crash(m.encode(_train(1))) == b"ok"
    assert crash(b"garbage") == b"ok"  # not a request: the handler refuses it
    with pytest.raises(Died):
        crash(m.encode(_train(2)))
    assert len(answered) == 2


def test_the_test_agent_process_dies_with_status_3_at_its_crash_point(
    parties: DeploymentFiles, tmp_path: Path
) -> None:
    settings = parties.agent(1, tmp_path / "bank-1")
    argv = [
        sys.executable, "-m", "securefed.testing.agent",
        "--config", str(settings.config), "--roster", str(settings.roster),
        "--key", str(settings.key), "--unsafe-plaintext-key", "--party", settings.party,
        "--data", str(settings.data), "--tenant", "1", "--num-classes", "10",
        "--state", str(settings.state), "--seed", "5", "--crash-at", "0:setup",
    ]  # fmt: skip
    with subprocess.Popen(argv, stderr=subprocess.PIPE) as agent:  # noqa: S603 -- our own module
        try:
            deadline = time.monotonic() + 120
            while not socket_path(settings.state).exists():
                assert agent.poll() is None, agent.stderr.read() if agent.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.1)
            joined = m.decode(ask(settings.state, m.encode(m.Join(os.urandom(32))), timeout=30))
            assert isinstance(joined, m.Joined)
            with pytest.raises((RemoteProtocolError, OSError)):
                ask(settings.state, m.encode(m.Setup(b"a directory")), timeout=30)
            assert agent.wait(timeout=30) == CRASH_STATUS
        finally:
            if agent.poll() is None:
                agent.send_signal(signal.SIGKILL)
    ledger = (settings.state / "ledgers" / "bank-1.jsonl").read_text()
    assert "TEST AGENT" in ledger  # the seeded agent says so in its ledger


# -- the signed join: which party answers on a node --------------------------------------------


def _joined(party: str = "bank-1", dim: int = 7) -> m.Joined:
    return m.Joined(
        party=party,
        head=Head(party, -1, GENESIS_HASH),
        dim=dim,
        info=m.ClientInfo(train_samples=10, test_samples=2),
        evaluation=m.Evaluation(0, None, None),
    )


def test_a_signed_join_names_its_party() -> None:
    fed = make_federation(N)
    join = m.Join(os.urandom(32), setup=os.urandom(32), node=2**63 + 5)
    signed = sign_joined(fed.client_keys[1], fed.roster, join, _joined())
    decoded = m.decode(m.encode(signed))
    assert isinstance(decoded, m.Joined)
    assert verified_party(fed.roster, join, decoded) == 1


def test_a_join_that_does_not_verify_is_refused() -> None:
    """Issue 20, finding 5: the signature covers the roster digest, the node id the request
    went to and the session, besides the challenge."""
    fed = make_federation(N)
    other = make_federation(N)
    challenge = os.urandom(32)
    join = m.Join(challenge, setup=os.urandom(32), node=3)
    genuine = sign_joined(fed.client_keys[1], fed.roster, join, _joined())
    relayed = dataclasses.replace(join, node=4)
    other_session = dataclasses.replace(join, setup=os.urandom(32))
    refused = {
        "unsigned": _joined(),
        "another party's key": sign_joined(fed.client_keys[0], fed.roster, join, _joined()),
        "the server's key": sign_joined(fed.server_key, fed.roster, join, _joined()),
        "another challenge": sign_joined(
            fed.client_keys[1], fed.roster, m.Join(os.urandom(32), join.setup, node=3), _joined()
        ),
        "another node": sign_joined(fed.client_keys[1], fed.roster, relayed, _joined()),
        "another session": sign_joined(fed.client_keys[1], fed.roster, other_session, _joined()),
        "another roster": sign_joined(fed.client_keys[1], other.roster, join, _joined()),
        "a field changed": dataclasses.replace(genuine, dim=8),
        "a field added": dataclasses.replace(genuine, setup_key=b"k"),
        "relabelled": dataclasses.replace(genuine, party="bank-2"),
        "not in the roster": sign_joined(fed.client_keys[1], fed.roster, join, _joined("bank-9")),
        "another party's head": sign_joined(
            fed.client_keys[1],
            fed.roster,
            join,
            dataclasses.replace(_joined(), head=Head("bank-2", -1, GENESIS_HASH)),
        ),
    }
    assert verified_party(fed.roster, join, genuine) == 1
    for case, reply in refused.items():
        try:
            verified_party(fed.roster, join, reply)
        except RemoteProtocolError:
            continue
        pytest.fail(f"accepted a join with {case}")
    # the genuine reply, relayed to another node or replayed in another session, is refused
    for request in (relayed, other_session, None):
        with pytest.raises(RemoteProtocolError):
            verified_party(fed.roster, request, genuine)


def test_the_benchmark_makes_any_configuration_deployable_for_both_runs(tmp_path: Path) -> None:
    source = RunConfig(
        mode=PersonalizationMode.GROUP,
        baselines=(PersonalizationMode.LOCAL,),
        dropout_rate=0.2,
        data=DataConfig(tenants=6, groups=2, samples_per_tenant=40, model=ModelName.MLP),
    )
    config, adjusted = deployable_config(source, tmp_path)
    check_deployable(config)
    assert config.baselines == ()
    assert config.dropout_rate == 0
    assert config.data == DataConfig(directory=str(tmp_path / "data"), model=ModelName.MLP)
    assert config.personalize.segments == (0, 0, 0, 1, 1, 1)  # listed from federation.json
    EngineSettings.from_run_config(config, parties=6)  # groups of 3: the engine runs it
    assert len(adjusted) == 4
    with pytest.raises(ConfigError, match="secure = false"):
        deployable_config(dataclasses.replace(config, secure=False), tmp_path)


def test_a_state_directory_others_can_read_is_tightened_and_ledgered(
    parties: DeploymentFiles, tmp_path: Path
) -> None:
    """Issue 21, item 5: the state directory is 0700 and its secret-bearing files 0600; one that
    already exists with 0755 is tightened, with a ledgered hazard naming the old mode."""
    state = tmp_path / "bank-1"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    institution = build_institution(parties.agent(1, state))
    try:
        assert state.stat().st_mode & 0o777 == 0o700
        hazards = [
            str(e.payload["text"])
            for e in map(parse_entry, ledger_path(state, "bank-1").read_bytes().splitlines())
            if e.event is EventType.HAZARD
        ]
        assert any("had mode 0755" in text and "tightened to 0700" in text for text in hazards)
        secret = [state / "trainer" / "dp_accountant.json", state / "participation"]
        for path in secret:
            assert path.stat().st_mode & 0o077 == 0, path
    finally:
        institution.close()
