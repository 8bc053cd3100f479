"""The coordinator's side of a deployment: the server protocol, phase by phase, over an
abstract exchange (Flower's grid in :mod:`.server_app`; anything that moves bytes in tests).

One round r (the simulation's ``_round``, split into message exchanges):

1. ``hello`` to every connected node: which party it is, and its ledger head; the heads
   (and the server's) are bound into the round's signed transcript. A party that does not
   answer sits the round out (dropout before ``advertise``).
2. ``train``: each party trains locally (DP; its spend is ledgered and durable first) and
   answers with its signed key advertisement -- or a budget refusal.
3. ``protocol`` exchanges, one per remaining phase (share, mask, consistency, unmask): the
   :class:`~securefed.secagg.SecAggServer` of each group advances; each party gets the
   envelopes addressed to it; a party silent past the phase's timeout is a dropout of that
   phase, and the protocol's recovery (Shamir shares of the survivors) takes over.
4. ``finish``: each party of a completed group gets the group sum and its contributors,
   computes its personalized model itself, and records the checkpoint of the round's heads.

At the end ``end`` (each party records ``run.finished`` and reports its head) and ``seal``
(each records the final checkpoint of all heads). The coordinator never holds a client
secret: it sees what the simulation's server sees (adverts, sealed shares, masked vectors,
reconstructed dropout secrets, the group sums).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from securefed import __version__
from securefed.audit import (
    HEADS_CONTEXT_LABEL,
    Hazard,
    Head,
    Ledger,
    RunFinished,
    heads_context,
    ledger_path,
    record_checkpoint,
)
from securefed.crypto import SigningKey
from securefed.errors import ConfigError, ProtocolError, RemoteProtocolError, SecureFedError
from securefed.files import write_atomic
from securefed.runtime.config import RunConfig
from securefed.runtime.federated import run_configured, simulation_params
from securefed.runtime.flower.hello import new_challenge, verified_party
from securefed.runtime.flower.institution import (
    ATTENTION_MODES,
    UNSAFE_KEY_HAZARD,
    deployment_partition,
    heads_to_bytes,
)
from securefed.runtime.flower.wire import (
    DeployMessage,
    decode_deploy,
    pack_blobs,
    pack_floats,
    pack_ints,
    u64,
    unpack_blobs,
    unpack_float,
    unpack_floats,
    unpack_ints,
)
from securefed.runtime.nodes import ServerNode
from securefed.runtime.simulate import (
    Mode,
    RoundResult,
    ServerView,
    minimum_group_size,
    round_config,
    sub_roster,
    weights_from_sketches,
)
from securefed.secagg import AggregationMode, SecAggServer, Stage
from securefed.secagg.messages import decode
from securefed.secagg.roster import Roster
from securefed.secagg.session import SessionSetupServer, commitment_context
from securefed.secagg.transcript import ContextItem
from securefed.testing import Federation

__all__ = ["Coordinator", "Exchange", "PhaseTimeouts"]

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
PROGRESS_FILE = "progress.jsonl"
SERVER_ID = "server"


class Exchange(Protocol):
    """What the coordinator needs from the engine: the connected nodes, and one round trip."""

    def nodes(self) -> Sequence[int]:
        """The ids of the nodes connected now."""
        ...

    def exchange(self, requests: Mapping[int, bytes], *, timeout: float) -> dict[int, bytes]:
        """Send ``requests[node]`` to each node; return the replies that came in ``timeout``
        seconds (a node that failed or stayed silent is missing)."""
        ...


@dataclass(frozen=True, slots=True)
class PhaseTimeouts:
    """Seconds each exchange waits for replies; a party silent past it is a dropout."""

    hello: float = 20.0
    train: float = 300.0
    phase: float = 30.0
    join: float = 120.0  # before round 1: wait this long for every party to connect


@dataclass
class _Group:
    label: int
    members: tuple[int, ...]  # global roster indices
    server: SecAggServer


@dataclass
class _Traffic:
    sent: dict[str, int] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)

    def add(self, party: str, sent: int, received: int) -> None:
        self.sent[party] = self.sent.get(party, 0) + sent
        self.received[party] = self.received.get(party, 0) + received


class Coordinator:
    """Runs ``config.rounds`` rounds of a deployment over ``exchange`` (module docstring).

    ``state_dir`` holds the server's ledger (``ledgers/server.jsonl``), ``metrics.json`` and
    ``progress.jsonl`` (one line per exchange). ``pause_before`` (TESTS ONLY: e.g.
    ``{(1, "share")}``) makes the coordinator wait before those exchanges until the file
    ``state_dir/resume-<round>-<phase>`` exists, so that a test can kill or restart a node at
    a known point.
    """

    def __init__(
        self,
        *,
        config: RunConfig,
        roster: Roster,
        identity: SigningKey,
        state_dir: Path,
        exchange: Exchange,
        timeouts: PhaseTimeouts = PhaseTimeouts(),
        pause_before: frozenset[tuple[int, str]] = frozenset(),
        unsafe_key: bool = False,
    ) -> None:
        if identity.verify_key() != roster.server.identity:
            raise ConfigError("the server key is not the roster's server identity")
        self.config = config
        self.roster = roster
        self.partition = deployment_partition(config, roster)
        self.params = simulation_params(config)
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._identity = identity
        self._exchange = exchange
        self.timeouts = timeouts
        self._pause = pause_before
        self.node_of: dict[str, int] = {}
        self.traffic = _Traffic()
        self.attention = config.mode in ATTENTION_MODES
        self._setup_keys: dict[str, bytes] = {}
        self._dim: int | None = None
        self.history: list[dict[str, Any]] = []
        smallest = minimum_group_size(self.params)
        for label in sorted(set(self.partition)):
            size = self.partition.count(label)
            if size < smallest:
                raise ConfigError(f"group {label} has {size} members; groups need {smallest}")
        self.ledger = Ledger.open(ledger_path(self.state_dir, SERVER_ID), SERVER_ID, identity)
        self.server_node = ServerNode(
            mode=config.mode,
            secure=True,
            federation=Federation(roster, identity, ()),
            ledger=self.ledger,
            seed=config.seed,
            params=self.params,
            partition=self.partition,
        )
        if self.ledger.head.seq == -1:
            self._record_configured()
            if unsafe_key:
                self.ledger.record(Hazard(text=UNSAFE_KEY_HAZARD))
            self.server_node.record_declared_partition()

    def _record_configured(self) -> None:
        self.ledger.record(run_configured(self.config, self.roster))

    # -- transport helpers ---------------------------------------------------------------

    def _progress(self, round_: int, phase: str, **extra: Any) -> None:
        line = {"round": round_, "phase": phase, "time": time.time(), **extra}
        with (self.state_dir / PROGRESS_FILE).open("a", encoding="utf-8") as out:
            out.write(json.dumps(line, sort_keys=True) + "\n")
        if (round_, phase) in self._pause:
            resume = self.state_dir / f"resume-{round_}-{phase}"
            deadline = time.monotonic() + 300
            while not resume.exists() and time.monotonic() < deadline:
                time.sleep(0.1)

    def _send(
        self, requests: Mapping[str, DeployMessage], *, timeout: float
    ) -> dict[str, DeployMessage]:
        """One exchange with parties (by id); replies that are errors or malformed are
        dropped like silence (and logged by kind only)."""
        encoded = {p: m.to_bytes() for p, m in requests.items() if p in self.node_of}
        by_node = {self.node_of[p]: data for p, data in encoded.items()}
        party_of = {n: p for p, n in self.node_of.items()}
        replies = self._exchange.exchange(by_node, timeout=timeout)
        decoded: dict[str, DeployMessage] = {}
        for node, data in replies.items():
            party = party_of.get(node)
            if party is None:
                continue
            self.traffic.add(party, len(encoded[party]), len(data))
            try:
                message = decode_deploy(data)
            except RemoteProtocolError:
                log.warning("malformed reply from %s", party)
                continue
            if message.kind == "error":
                log.warning("%s refused a message: %s", party, message.text("reason")[:200])
                continue
            decoded[party] = message
        for party, data in encoded.items():
            if party not in decoded:
                self.traffic.add(party, len(data), 0)
        return decoded

    def _hello(self, round_: int, *, wait_for_all: bool, session: bytes | None) -> dict[str, Head]:
        """Map connected nodes to parties (a party that reconnected from a new node moves to
        it) and collect their ledger heads; in attention mode also each party's session key
        for the round's sketch-seed setup (into ``self._setup_keys``)."""
        deadline = time.monotonic() + (self.timeouts.join if wait_for_all else 0.0)
        self._setup_keys = {}
        while True:
            nodes = list(self._exchange.nodes())
            challenge = new_challenge()
            fields = {"challenge": challenge}
            if session is not None:
                fields["session"] = session
            request = DeployMessage("hello", fields).to_bytes()
            replies = self._exchange.exchange(
                dict.fromkeys(nodes, request), timeout=self.timeouts.hello
            )
            heads: dict[str, Head] = {}
            for node, data in replies.items():
                try:
                    message = decode_deploy(data)
                    party = verified_party(self.roster, challenge, message)
                    actor, seq, digest = message.text("head").split(" ")
                    head = Head(actor, int(seq), digest)
                    dim = message.integer("dim")
                except (SecureFedError, ValueError) as exc:
                    log.warning("node %s: hello ignored (%s)", node, exc)
                    continue
                if head.actor != party:
                    continue
                if self._dim is None:
                    self._dim = dim  # every party builds the model from the same configuration
                elif dim != self._dim:
                    log.warning("%s reports %d parameters, not %d: left out", party, dim, self._dim)
                    continue
                self.node_of[party] = node
                heads[party] = head
                if session is not None and "setup" in message.fields:
                    self._setup_keys[party] = message.get("setup")
                self.traffic.add(party, len(request), len(data))
            if len(heads) == self.roster.size or time.monotonic() >= deadline:
                return heads
            time.sleep(1.0)

    # -- the run -------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """All rounds, then the final checkpoint; returns (and writes) the metrics."""
        status, completed = "completed", 0
        started = time.perf_counter()
        try:
            for round_ in range(1, self.config.rounds + 1):
                self.history.append(self._round(round_))
                completed = round_
        except BaseException:
            status = "interrupted"
            raise
        finally:
            self._end(completed, status)
        metrics = self._metrics(time.perf_counter() - started)
        write_atomic(
            self.state_dir / METRICS_FILE,
            (json.dumps(metrics, indent=2, sort_keys=True) + "\n").encode(),
            overwrite=True,
        )
        return metrics

    def _round(self, round_: int) -> dict[str, Any]:
        started = time.perf_counter()
        n = self.roster.size
        self._progress(round_, "hello")
        sessions = {label: os.urandom(32) for label in sorted(set(self.partition))}
        setup_session = sessions[0] if self.attention else None
        heads = self._hello(round_, wait_for_all=round_ == 1, session=setup_session)
        all_heads = tuple(sorted([*heads.values(), self.ledger.head], key=lambda h: h.actor))
        context_bytes = heads_context(all_heads)
        context = [ContextItem(HEADS_CONTEXT_LABEL, context_bytes)]
        present = {self.roster.index_of(p) for p in heads}
        absent: dict[int, str] = {i: "advertise" for i in range(n) if i not in present}
        deliveries: dict[int, bytes] = {}
        if setup_session is not None:
            self._progress(round_, "setup")
            deliveries, commitment = self._session_setup(setup_session, present)
            context.append(commitment_context(commitment))
        self._progress(round_, "train", present=sorted(present))
        requests = {}
        for i in sorted(present):
            fields = {
                "round": u64(round_),
                "session": sessions[self.partition[i]],
                "heads": context_bytes,
            }
            if i in deliveries:
                fields["delivery"] = deliveries[i]
            requests[self.roster.client(i).party_id] = DeployMessage("train", fields)
        adverts, sketches, refused = self._train(requests, present, absent)
        weights = self._attention_weights(sketches) if self.attention else None
        groups = self._groups(round_, context, sessions, weights)
        group_of = {i: g for g in groups for i in g.members}
        for i, messages in adverts.items():
            self._deliver(group_of[i], i, messages)
        phase_seconds = {"train": time.perf_counter() - started}
        phase_seconds.update(self._protocol(round_, groups, group_of, absent))
        return self._finish_round(
            round_,
            groups=groups,
            heads=heads,
            all_heads=all_heads,
            absent=absent,
            refused=refused,
            started=started,
            phase_seconds=phase_seconds,
        )

    def _train(
        self,
        requests: Mapping[str, DeployMessage],
        present: set[int],
        absent: dict[int, str],
    ) -> tuple[dict[int, tuple[bytes, ...]], dict[int, npt.NDArray[np.float64]], list[int]]:
        """The train exchange: each party's key advertisement (and sketch, in attention mode);
        a silent, refusing or malformed party is absent from ``advertise`` on."""
        replies = self._send(requests, timeout=self.timeouts.train)
        refused = []
        adverts: dict[int, tuple[bytes, ...]] = {}
        sketches: dict[int, npt.NDArray[np.float64]] = {}
        for i in sorted(present):
            reply = replies.get(self.roster.client(i).party_id)
            if reply is None:
                absent[i] = "advertise"
                continue
            if reply.get("trained") != b"\x01":
                absent[i] = "advertise"
                refused.append(i)
                continue
            if self.attention:
                try:
                    sketches[i] = unpack_floats(reply.get("sketch"))
                except RemoteProtocolError:
                    absent[i] = "advertise"
                    continue
            adverts[i] = unpack_blobs(reply.get("messages"))
        return adverts, sketches, refused

    def _protocol(
        self,
        round_: int,
        groups: Sequence[_Group],
        group_of: Mapping[int, _Group],
        absent: dict[int, str],
    ) -> dict[str, float]:
        """The protocol phases, one exchange each, until every group's server is done or
        aborted; a party silent in a phase is absent from that phase on. Returns the seconds
        each phase took."""
        phase_seconds: dict[str, float] = {}
        while any(not g.server.stage.terminal for g in groups):
            outgoing: dict[int, list[bytes]] = {}
            phase = ""
            for group in groups:
                if group.server.stage.terminal:
                    continue
                for envelope in group.server.advance():
                    target = group.members[envelope.recipient]
                    outgoing.setdefault(target, []).append(envelope.message.to_bytes())
                phase = phase or group.server.stage.value
            if not outgoing:
                continue
            phase_started = time.perf_counter()
            self._progress(round_, phase, to=sorted(outgoing))
            requests = {
                self.roster.client(i).party_id: DeployMessage(
                    "protocol", {"round": u64(round_), "messages": pack_blobs(msgs)}
                )
                for i, msgs in outgoing.items()
            }
            replies = self._send(requests, timeout=self.timeouts.phase)
            for i in sorted(outgoing):
                reply = replies.get(self.roster.client(i).party_id)
                if reply is None:
                    absent.setdefault(i, phase)
                    continue
                self._deliver(group_of[i], i, unpack_blobs(reply.get("messages")))
            phase_seconds[phase] = time.perf_counter() - phase_started
        return phase_seconds

    def _groups(
        self,
        round_: int,
        context: Sequence[ContextItem],
        sessions: Mapping[int, bytes],
        weights: npt.NDArray[np.float64] | None,
    ) -> list[_Group]:
        """One protocol server per group (attention mode: one group of everyone, with xi)."""
        groups = []
        dim = self._dimension()
        mode = AggregationMode.ATTENTION if self.attention else AggregationMode.SUM
        for label in sorted(set(self.partition)):
            members = tuple(i for i in range(self.roster.size) if self.partition[i] == label)
            config = round_config(
                sub_roster(self.roster, members),
                self.params,
                dim=dim,
                session_id=sessions[label],
                round_=round_,
                mode=mode,
            )
            server = SecAggServer(config, identity=self._identity, context=context, weights=weights)
            groups.append(_Group(label, members, server))
        return groups

    def _session_setup(self, session: bytes, present: set[int]) -> tuple[dict[int, bytes], bytes]:
        """Attention mode: relay the round's sketch-seed setup (the server learns no seed).
        Returns each non-dealer's sealed delivery and the seed's commitment. Raises
        ProtocolError if the dealer (the lowest index that sent a session key) did not offer
        a seed: the round cannot compute weights without one."""
        setup = SessionSetupServer(self.roster, session_id=session, identity=self._identity)
        for party, data in self._setup_keys.items():
            if self.roster.index_of(party) in present:
                self._receive_setup(setup, data, party)
        directory = DeployMessage("setup", {"directory": setup.directory().to_bytes()})
        replies = self._send(
            {self.roster.client(i).party_id: directory for i in sorted(present)},
            timeout=self.timeouts.phase,
        )
        for party, reply in replies.items():
            for data in unpack_blobs(reply.get("messages")):
                self._receive_setup(setup, data, party)
        try:
            deliveries = {i: d.to_bytes() for i, d in setup.deliveries()}
        except ProtocolError:
            raise ProtocolError("the sketch-seed dealer did not offer a seed") from None
        if setup.commitment is None:
            raise ProtocolError("the sketch-seed setup ended without a commitment")
        return deliveries, setup.commitment

    @staticmethod
    def _receive_setup(setup: SessionSetupServer, data: bytes, party: str) -> None:
        try:
            setup.receive(decode(data))
        except ProtocolError as exc:
            log.warning("dropped a setup message from %s: %s", party, type(exc).__name__)

    def _attention_weights(
        self, sketches: Mapping[int, npt.NDArray[np.float64]]
    ) -> npt.NDArray[np.float64]:
        """xi over the parties that trained and sent a sketch, embedded in the roster's N x N
        matrix (a party without a sketch keeps only itself and gets weight from nobody; it does
        not advertise, so the protocol treats it as a dropout before advertise)."""
        n = self.roster.size
        weights = np.eye(n)
        present = sorted(sketches)
        if len(present) < 2 or len({sketches[i].size for i in present}) != 1:
            return weights
        stacked = np.stack([sketches[i] for i in present])
        xi = weights_from_sketches(stacked, Mode(self.config.mode.value), self.params)
        weights[np.ix_(present, present)] = xi
        return weights

    def _dimension(self) -> int:
        if self._dim is None:
            raise ProtocolError("no party answered hello: the model dimension is unknown")
        return self._dim

    def _deliver(self, group: _Group, index: int, messages: Sequence[bytes]) -> None:
        """Protocol messages from party ``index`` to its group's server; anything malformed or
        illegal is the sender's problem (the server ignores it: that client then drops)."""
        for data in messages:
            if group.server.stage.terminal:
                return
            try:
                message = decode(data)
                if getattr(message, "sender", group.members.index(index)) != group.members.index(
                    index
                ):
                    raise RemoteProtocolError("a party sent a message in another party's name")
                group.server.receive(message)
            except ProtocolError as exc:
                log.warning("dropped a message from client %d: %s", index, type(exc).__name__)

    def _finish_round(
        self,
        round_: int,
        *,
        groups: Sequence[_Group],
        heads: Mapping[str, Head],
        all_heads: tuple[Head, ...],
        absent: dict[int, str],
        refused: Sequence[int],
        started: float,
        phase_seconds: dict[str, float],
    ) -> dict[str, Any]:
        n = self.roster.size
        outputs: dict[Any, Any] = {}
        seeds: dict[int, bytes] = {}
        keys: dict[int, bytes] = {}
        aborted: dict[int, str] = {}
        sums: dict[int, tuple[bytes, bytes]] = {}
        for group in groups:
            server = group.server
            seeds.update({group.members[u]: s for u, s in server.reconstructed_self_seeds.items()})
            keys.update({group.members[u]: k for u, k in server.reconstructed_mask_keys.items()})
            if self.attention:
                if server.stage is not Stage.DONE:
                    aborted.update(dict.fromkeys(group.members, f"round {server.stage.value}"))
                    continue
                outputs.update(server.blinded_outputs)
                survivors = {group.members[u] for u in server.survivors}
                for i in group.members:
                    if i not in survivors:
                        aborted.setdefault(i, absent.get(i, "dropped out"))
                continue
            outcome = server.result
            if outcome is None:
                aborted.update(dict.fromkeys(group.members, f"group round {server.stage.value}"))
                continue
            outputs[group.label] = outcome.ring_sum
            contributors = tuple(group.members[j] for j in outcome.contributors)
            sums[group.label] = (pack_floats(outcome.values), pack_ints(contributors))
            for i in group.members:
                if i not in contributors:
                    aborted.setdefault(i, absent.get(i, "dropped out"))
        self._progress(round_, "finish")
        heads_bytes = heads_to_bytes(all_heads)
        requests = {}
        for party in heads:
            i = self.roster.index_of(party)
            fields = {"round": u64(round_), "heads": heads_bytes}
            if self.partition[i] in sums:
                fields["sum"], fields["contributors"] = sums[self.partition[i]]
            requests[party] = DeployMessage("finish", fields)
        replies = self._send(requests, timeout=self.timeouts.phase)
        view = ServerView({}, {}, outputs, seeds, keys, np.zeros((n, n)))
        result = RoundResult({}, aborted, np.zeros((n, n)), 0.0, view, partition=self.partition)
        self.server_node.record_secure_round(round_, n, absent, result)
        record_checkpoint(self.ledger, all_heads, final=False)
        clients = {}
        for party, reply in replies.items():
            clients[party] = {
                "completed": reply.get("completed") == b"\x01",
                "test_accuracy": unpack_float(reply.get("accuracy")),
                "epsilon": unpack_float(reply.get("epsilon")),
            }
        accuracies = [
            c["test_accuracy"] for c in clients.values() if c["test_accuracy"] is not None
        ]
        return {
            "round": round_,
            "seconds": time.perf_counter() - started,
            "phase_seconds": phase_seconds,
            "dropouts": {self.roster.client(i).party_id: p for i, p in sorted(absent.items())},
            "refused": [self.roster.client(i).party_id for i in refused],
            "completed": sorted(p for p, c in clients.items() if c["completed"]),
            "clients": clients,
            "mean_test_accuracy": float(np.mean(accuracies)) if accuracies else None,
            "group_sizes": {
                str(label): len(unpack_ints(members)) for label, (_, members) in sums.items()
            },
        }

    def _end(self, rounds: int, status: str) -> None:
        """``run.finished`` everywhere, then the same final checkpoint everywhere."""
        try:
            self._progress(rounds, "end")
            requests = {
                party: DeployMessage("end", {"rounds": u64(rounds), "status": status.encode()})
                for party in self.node_of
            }
            replies = self._send(requests, timeout=self.timeouts.phase)
            self.ledger.record(RunFinished(rounds=rounds, status=status))
            heads = [self.ledger.head]
            for party, reply in replies.items():
                actor, seq, digest = reply.text("head").split(" ")
                if actor == party:
                    heads.append(Head(actor, int(seq), digest))
            ordered = tuple(sorted(heads, key=lambda h: h.actor))
            seal = DeployMessage("seal", {"heads": heads_to_bytes(ordered)})
            sealed = self._send(dict.fromkeys(replies, seal), timeout=self.timeouts.phase)
            self.final = {
                party: {
                    "test_accuracy": unpack_float(reply.get("accuracy")),
                    "epsilon": unpack_float(reply.get("epsilon")),
                }
                for party, reply in sealed.items()
            }
            record_checkpoint(self.ledger, ordered, final=True)
        except (SecureFedError, OSError, ValueError):
            if status == "completed":
                raise
        finally:
            self.ledger.close()

    def _metrics(self, seconds: float) -> dict[str, Any]:
        return {
            "mode": self.config.mode.value,
            "rounds": len(self.history),
            "history": self.history,
            "final": getattr(self, "final", {}),
            "seconds": seconds,
            "bytes_sent": self.traffic.sent,
            "bytes_received": self.traffic.received,
            "config_sha256": self.config.sha256(),
            "software_version": __version__,
        }
