"""The institution's side of a deployment: one long-lived agent process per institution.

:class:`Institution` holds what never leaves the institution's machine: its tenant data, its
:class:`~securefed.runtime.nodes.ClientNode` (the DP trainer with its accountant state, the
ledger and its identity key) and, during a round, the :class:`~securefed.secagg.SecAggClient`
with the round's key pairs and the shares it holds. Its state directory holds::

    ledgers/<party>.jsonl     the signed ledger (re-opened and verified on restart)
    trainer/                  the accountant state (epsilon continues on restart)
    model.safetensors         the current model, written after every local training and every
                              personalized update (a restart continues from it)
    agent.sock                the local socket the Flower ClientApp relays messages through

:func:`serve` answers one deployment message per connection on that Unix socket (the state
directory is mode 0700: only the institution's own account can connect). Flower's ClientApp
(:mod:`.client_app`) is a thin relay to it, so Flower's per-message app processes never hold a
secret and nothing secret is ever put into a Flower message.

The protocol is the simulation's, call for call: :func:`build_client` and
:class:`ClientNode` for training and ledgering, :func:`round_config`, :func:`sub_roster` and
:func:`group_personalized` for the round, :class:`SecAggClient` for the protocol.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from securefed.audit import (
    HEADS_CONTEXT_LABEL,
    Hazard,
    Head,
    Ledger,
    RunFinished,
    ledger_path,
    record_checkpoint,
)
from securefed.crypto import SigningKey
from securefed.data import TenantData
from securefed.errors import ConfigError, ProtocolError, RemoteProtocolError, SecureFedError
from securefed.models import load_model, save_model
from securefed.runtime.config import PersonalizationMode, RunConfig, SimilaritySource
from securefed.runtime.federated import (
    build_client,
    client_seed,
    run_configured,
    simulation_params,
)
from securefed.runtime.flower.hello import sign_hello
from securefed.runtime.flower.relay import read_frame, socket_path, write_frame
from securefed.runtime.flower.wire import (
    DeployMessage,
    decode_deploy,
    pack_blobs,
    pack_float,
    pack_floats,
    u64,
    unpack_blobs,
    unpack_floats,
    unpack_ints,
)
from securefed.runtime.simulate import (
    group_personalized,
    group_self_weight,
    make_sketcher,
    round_config,
    sub_roster,
)
from securefed.secagg import AggregationMode, SecAggClient, Stage
from securefed.secagg.messages import MaskedInput, decode
from securefed.secagg.roster import Roster
from securefed.secagg.session import SessionSetupClient, commitment_context
from securefed.secagg.transcript import ContextItem

__all__ = ["Institution", "deployment_partition", "heads_from_bytes", "serve"]

log = logging.getLogger(__name__)

UNSAFE_KEY_HAZARD = (
    "the identity key was stored unencrypted (a throwaway test key): anyone who can read the "
    "file can sign as this party"
)
MODEL_FILE = "model.safetensors"


ATTENTION_MODES = (PersonalizationMode.FEDAMP, PersonalizationMode.HEURFEDAMP)


def deployment_partition(config: RunConfig, roster: Roster) -> tuple[int, ...]:
    """The groups of a deployment: group mode's declared partition (``segments = [...]`` listed
    in the run configuration every party holds), or one group of everyone in attention mode
    (FedAMP / HeurFedAMP with similarities from secret sketches of the models). Raises
    ConfigError for what a deployment does not run yet (FedAvg and local, learned segments, the
    DP similarity statistic, plaintext)."""
    if not config.secure:
        raise ConfigError("a deployment always aggregates securely (secure = true)")
    if config.mode in ATTENTION_MODES:
        if config.personalize.similarity is not SimilaritySource.MODEL:
            raise ConfigError(
                "a Flower deployment computes attention weights from sketches of the models "
                '(personalize.similarity = "model"); the DP statistic runs in the simulation only'
            )
        return (0,) * roster.size
    segments = config.personalize.segments
    if config.mode is not PersonalizationMode.GROUP or not isinstance(segments, tuple):
        raise ConfigError(
            "a Flower deployment runs secure group mode with declared segments "
            '(mode = "group", [personalize] segments = [...]), fedamp or heurfedamp'
        )
    if len(segments) != roster.size:
        raise ConfigError(f"segments lists {len(segments)} groups for {roster.size} clients")
    return segments


def heads_to_bytes(heads: tuple[Head, ...]) -> bytes:
    return pack_blobs([f"{h.actor} {h.seq} {h.hash}".encode("ascii") for h in heads])


def heads_from_bytes(data: bytes) -> tuple[Head, ...]:
    """The heads a coordinator sent (RemoteProtocolError if malformed)."""
    heads = []
    for item in unpack_blobs(data):
        try:
            actor, seq, digest = item.decode("ascii").split(" ")
            heads.append(Head(actor, int(seq), digest))
        except (ValueError, UnicodeDecodeError, SecureFedError):
            raise RemoteProtocolError("malformed ledger head") from None
    return tuple(sorted(heads, key=lambda h: h.actor))


def head_bytes(head: Head) -> bytes:
    return f"{head.actor} {head.seq} {head.hash}".encode("ascii")


class Institution:
    """One institution's agent (module docstring). ``reproducible`` seeds the trainer from the
    run seed exactly as the simulation does -- TESTS ONLY (anyone who knows the seed can
    subtract the DP noise); it is ledgered as a hazard."""

    def __init__(
        self,
        *,
        config: RunConfig,
        roster: Roster,
        identity: SigningKey,
        party_id: str,
        tenant: TenantData,
        num_classes: int,
        state_dir: Path,
        reproducible: bool = False,
        unsafe_key: bool = False,
    ) -> None:
        self.config = config
        self.roster = roster
        self.party_id = party_id
        self.index = roster.index_of(party_id)
        if identity.verify_key() != roster.client(self.index).identity:
            raise ConfigError(f"the identity key is not {party_id}'s key in the roster")
        self.partition = deployment_partition(config, roster)
        self.params = simulation_params(config)
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._identity = identity
        self.ledger = Ledger.open(ledger_path(self.state_dir, party_id), party_id, identity)
        fresh = self.ledger.head.seq == -1
        seed = client_seed(config.seed, self.index) if reproducible else None
        self.node = build_client(
            config,
            tenant,
            num_classes=num_classes,
            index=self.index,
            party_id=party_id,
            state_dir=self.state_dir / "trainer",
            ledger=self.ledger,
            seed=seed,
        )
        if fresh:
            self._record_configured(reproducible, unsafe_key)
            self.node.record_setup()
        model_file = self.state_dir / MODEL_FILE
        if model_file.exists():
            load_model(self.node.trainer.model(), model_file)
        self._client: SecAggClient | None = None
        self._setup: SessionSetupClient | None = None
        self.attention = config.mode in ATTENTION_MODES
        self._masked: list[npt.NDArray[Any]] = []
        self._round = 0
        self.members = tuple(
            i for i in range(roster.size) if self.partition[i] == self.partition[self.index]
        )

    def _record_configured(self, reproducible: bool, unsafe_key: bool) -> None:
        self.ledger.record(run_configured(self.config, self.roster))
        if unsafe_key:
            self.ledger.record(Hazard(text=UNSAFE_KEY_HAZARD))
        if reproducible:
            self.ledger.record(
                Hazard(
                    text="reproducible test deployment: the trainer is seeded from the run "
                    "seed, so anyone who knows it can subtract the DP noise (tests only)"
                )
            )

    # -- one deployment message in, one out ------------------------------------------------

    def handle(self, message: DeployMessage) -> DeployMessage:
        handlers: dict[str, Callable[[DeployMessage], DeployMessage]] = {
            "hello": self._hello,
            "setup": self._session_keys,
            "train": self._train,
            "protocol": self._protocol,
            "finish": self._finish,
            "end": self._end,
            "seal": self._seal,
        }
        handler = handlers.get(message.kind)
        if handler is None:
            raise RemoteProtocolError(f"unknown deployment message {message.kind!r}")
        return handler(message)

    def _hello(self, message: DeployMessage) -> DeployMessage:
        """Who this is, its ledger head and model size; in attention mode also the first
        message of the round's sketch-seed setup (a fresh session key). Signed over the
        coordinator's challenge (:mod:`.hello`); a request without one is refused."""
        challenge = message.get("challenge")
        fields = {
            "party": self.party_id.encode(),
            "head": head_bytes(self.ledger.head),
            "dim": u64(self.node.parameters().size),
        }
        self._setup = None
        if self.attention and "session" in message.fields:
            self._setup = SessionSetupClient(
                self.roster,
                session_id=message.get("session"),
                index=self.index,
                identity=self._identity,
            )
            fields["setup"] = self._setup.start().to_bytes()
        return sign_hello(self._identity, challenge, DeployMessage("hello", fields))

    def _session_keys(self, message: DeployMessage) -> DeployMessage:
        """Attention mode: the session-key directory in; the dealer's sealed seed offer out."""
        if self._setup is None:
            raise RemoteProtocolError("no session setup in progress")
        offers = self._setup.receive(decode(message.get("directory")))
        return DeployMessage("setup", {"messages": pack_blobs([m.to_bytes() for m in offers])})

    def _train(self, message: DeployMessage) -> DeployMessage:
        round_ = message.integer("round")
        session_id = message.get("session")
        heads = message.get("heads")
        self._client, self._masked, self._round = None, [], round_
        context = [ContextItem(HEADS_CONTEXT_LABEL, heads)]
        sketch_seed = None
        if self.attention:
            sketch_seed, commitment = self._sketch_seed(message)
            context.append(commitment_context(commitment))
        outcome = self.node.train(round_)
        model = self.node.trainer.model()
        save_model(model, self.state_dir / MODEL_FILE, metadata={"round": str(round_)})
        if not outcome.trained:
            return DeployMessage("train", {"trained": b"\x00"})
        parameters = self.node.parameters()
        local = self.members.index(self.index)
        config = round_config(
            sub_roster(self.roster, self.members),
            self.params,
            dim=parameters.size,
            session_id=session_id,
            round_=round_,
            mode=AggregationMode.ATTENTION if self.attention else AggregationMode.SUM,
        )
        self._client = SecAggClient(config, index=local, identity=self._identity, context=context)
        advert = self._client.start(parameters)
        fields = {"trained": b"\x01", "messages": pack_blobs([advert.to_bytes()])}
        if sketch_seed is not None:
            sketcher = make_sketcher(sketch_seed, self.params, model_dim=parameters.size)
            fields["sketch"] = pack_floats(sketcher.distance_sketch(parameters, round_=1))
        return DeployMessage("train", fields)

    def _sketch_seed(self, message: DeployMessage) -> tuple[bytes, bytes]:
        """The session's secret sketch seed and its commitment: drawn by this client if it is
        the dealer, else opened from the delivery the coordinator relays."""
        setup = self._setup
        if setup is None:
            raise RemoteProtocolError("no session setup in progress")
        if setup.sketch_seed is None and "delivery" in message.fields:
            setup.receive(decode(message.get("delivery")))
        if setup.sketch_seed is None or setup.commitment is None:
            raise RemoteProtocolError("the sketch seed did not arrive")
        return setup.sketch_seed, setup.commitment

    def _protocol(self, message: DeployMessage) -> DeployMessage:
        client = self._client
        if client is None or message.integer("round") != self._round:
            raise RemoteProtocolError("no protocol round in progress for this message")
        replies: list[bytes] = []
        error = b""
        for data in unpack_blobs(message.get("messages")):
            try:
                for reply in client.receive(decode(data)):
                    if isinstance(reply, MaskedInput):
                        self._masked.append(np.asarray(reply.vector))
                    replies.append(reply.to_bytes())
            except ProtocolError as exc:
                error = str(exc).encode()
                break
        fields = {"messages": pack_blobs(replies), "stage": client.stage.value.encode()}
        if error:
            fields["error"] = error
        return DeployMessage("protocol", fields)

    def _finish(self, message: DeployMessage) -> DeployMessage:
        """The round's end: the group sum (if this client's group completed), then the
        checkpoint of the heads bound into the round."""
        round_ = message.integer("round")
        client, completed = self._client, False
        self.node.record_release(round_, self._masked)
        if (
            self.attention
            and client is not None
            and round_ == self._round
            and client.personalized is not None
        ):
            self.node.receive(client.personalized, anchor=True)
            save_model(
                self.node.trainer.model(),
                self.state_dir / MODEL_FILE,
                metadata={"round": str(round_)},
            )
            completed = True
        elif (
            client is not None
            and round_ == self._round
            and client.stage is Stage.DONE
            and "sum" in message.fields
        ):
            contributors = unpack_ints(message.get("contributors"))
            if self.index in contributors and len(contributors) >= 2:
                own = group_self_weight(self.partition, self.index, self.params.self_weight)
                personalized = group_personalized(
                    self.node.parameters(),
                    unpack_floats(message.get("sum")),
                    contributors=len(contributors),
                    own=own,
                )
                self.node.receive(personalized, anchor=False)
                save_model(
                    self.node.trainer.model(),
                    self.state_dir / MODEL_FILE,
                    metadata={"round": str(round_)},
                )
                completed = True
        record_checkpoint(self.ledger, heads_from_bytes(message.get("heads")), final=False)
        self._client, self._masked = None, []
        return DeployMessage(
            "finish",
            {
                "completed": b"\x01" if completed else b"\x00",
                "accuracy": pack_float(self.node.test_accuracy()),
                "epsilon": pack_float(self.node.trainer.epsilon()),
            },
        )

    def _end(self, message: DeployMessage) -> DeployMessage:
        status = message.text("status")
        self.ledger.record(RunFinished(rounds=message.integer("rounds"), status=status))
        return DeployMessage("end", {"head": head_bytes(self.ledger.head)})

    def _seal(self, message: DeployMessage) -> DeployMessage:
        record_checkpoint(self.ledger, heads_from_bytes(message.get("heads")), final=True)
        return DeployMessage(
            "seal",
            {
                "accuracy": pack_float(self.node.test_accuracy()),
                "epsilon": pack_float(self.node.trainer.epsilon()),
            },
        )

    def close(self) -> None:
        self.ledger.close()


# -- the local socket (framing in .relay) ----------------------------------------


def serve(institution: Institution, *, stop: Callable[[], bool] = lambda: False) -> None:
    """Answer deployment messages on ``state_dir/agent.sock``, one per connection, until
    ``stop()`` (checked every second) or SIGTERM. A malformed or refused message is answered
    with an ``error`` message (its reason; never a secret) and the agent goes on."""
    path = socket_path(institution.state_dir)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        old = os.umask(0o177)
        try:
            listener.bind(str(path))
        finally:
            os.umask(old)
        listener.listen(8)
        listener.settimeout(1.0)
        while not stop():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(600)
                try:
                    request = decode_deploy(read_frame(conn))
                    reply = institution.handle(request)
                except (SecureFedError, OSError) as exc:
                    log.warning("refused a deployment message: %s", type(exc).__name__)
                    reply = DeployMessage("error", {"reason": str(exc).encode()[:4096]})
                with contextlib.suppress(OSError):
                    write_frame(conn, reply.to_bytes())
