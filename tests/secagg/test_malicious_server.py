"""A malicious server (and colluding clients) against the protocol (DESIGN §3, R1, R2).

Each test scripts the attack through the harness hooks: the server's identity key re-signs
whatever the attack needs, so the messages are authentic -- only their content lies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from securefed.errors import ConfigError
from securefed.secagg import (
    RoundAborted,
    RoundConfig,
    Stage,
    UnmaskRefused,
)
from securefed.secagg.messages import (
    ConsistencyRequest,
    ConsistencySignature,
    KeyDirectory,
    Message,
    UnmaskRequest,
    UnmaskResponse,
    sign_message,
)
from securefed.secagg.server import Envelope
from securefed.secagg.transcript import ContextItem
from securefed.testing import Federation, resign, run_round
from tests.secagg.conftest import config_for, federation, inputs_for


@dataclass
class Recorder:
    """Client hook that records every message sent to the server."""

    sent: list[tuple[int, Message]] = field(default_factory=list)

    def __call__(self, sender: int, message: Message) -> Sequence[Message]:
        self.sent.append((sender, message))
        return (message,)

    def unmask_responses(self) -> list[UnmaskResponse]:
        return [m for _, m in self.sent if isinstance(m, UnmaskResponse)]


def revealed_owners(responses: list[UnmaskResponse], owner: int) -> tuple[set[int], set[int]]:
    """(holders who revealed owner's self-seed share, holders who revealed its mask-key share)."""
    seeds = {r.sender for r in responses if any(s.owner == owner for s in r.self_seed_shares)}
    keys = {r.sender for r in responses if any(s.owner == owner for s in r.mask_key_shares)}
    return seeds, keys


@dataclass
class EquivocatingServer:
    """Tells group B that ``victim`` dropped and everyone else that it survived (R1 attack).

    It sees every client message (``client_hook``) and rewrites or adds server messages
    (``server_hook``). Colluding clients sign both views (the server holds their keys), so each
    group is shown its honest members' signatures on its view plus the colluders'.
    """

    fed: Federation
    config: RoundConfig
    victim: int
    group_b: frozenset[int]
    colluders: frozenset[int]
    views: dict[int, tuple[int, ...]] = field(default_factory=dict)
    signed: dict[int, ConsistencySignature] = field(default_factory=dict)
    recorder: Recorder = field(default_factory=Recorder)

    def client_hook(self, sender: int, message: Message) -> Sequence[Message]:
        if isinstance(message, ConsistencySignature):
            self.signed[sender] = message
        return self.recorder(sender, message)

    def server_hook(self, envelope: Envelope) -> Sequence[Envelope]:
        message, recipient = envelope.message, envelope.recipient
        if isinstance(message, ConsistencyRequest):
            survivors = message.survivors
            if recipient in self.group_b:
                survivors = tuple(v for v in survivors if v != self.victim)
            self.views[recipient] = survivors
            return (Envelope(recipient, resign(message, self.fed.server_key, survivors=survivors)),)
        if isinstance(message, UnmaskRequest):
            if recipient != min(message.survivors):
                return ()  # every client gets its view's request below, once
            return tuple(
                Envelope(
                    client,
                    resign(
                        message, self.fed.server_key, survivors=view, consistency=self.collect(view)
                    ),
                )
                for client, view in sorted(self.views.items())
            )
        return (envelope,)

    def collect(self, view: tuple[int, ...]) -> tuple[ConsistencySignature, ...]:
        """Honest signatures made on ``view`` plus the colluders' signatures on the same hash."""
        on_view = {
            s: m
            for s, m in self.signed.items()
            if self.views.get(s) == view and s not in self.colluders
        }
        transcript = next(iter(on_view.values())).transcript_hash
        for c in self.colluders:
            on_view[c] = sign_message(
                ConsistencySignature,
                self.fed.client_keys[c],
                self.config.session_id,
                self.config.round,
                sender=c,
                transcript_hash=transcript,
            )
        return tuple(on_view[s] for s in sorted(on_view))


@pytest.mark.parametrize("n", [5, 7])
def test_equivocation_about_a_survivor_never_yields_both_secrets(n: int) -> None:
    fed = federation(n)
    config = config_for(fed)
    t, n_c = config.threshold, config.collusion_bound
    colluders = frozenset(range(n - n_c, n))
    victim = 0
    honest = [i for i in range(1, n) if i not in colluders]
    group_b = frozenset(honest[: len(honest) // 2])
    attack = EquivocatingServer(fed, config, victim, group_b, colluders)
    outcome = run_round(
        config, fed, inputs_for(n), server_hook=attack.server_hook, client_hook=attack.client_hook
    )

    seeds, keys = revealed_owners(attack.recorder.unmask_responses(), victim)
    honest_seed_holders = seeds - colluders
    honest_key_holders = keys - colluders
    # Colluders hold both of the victim's shares anyway; the attack succeeds only if honest
    # clients add enough shares of BOTH kinds to reach t.
    assert not (len(honest_seed_holders) + n_c >= t and len(honest_key_holders) + n_c >= t)
    aborted = [
        i
        for i, events in outcome.client_events.items()
        if any(isinstance(e, RoundAborted) for e in events)
    ]
    assert set(aborted) & group_b  # group B saw fewer than t signatures on its view


def test_equivocation_would_succeed_if_r1_were_violated() -> None:
    """The same attack with t = 3 for N = 5 and 2 colluders (2t - N = 1, not > n_C): it works.

    RoundConfig refuses such a threshold; we bypass its check here only to show that the test
    above would catch a protocol that let the threshold slip.
    """
    fed = federation(5)
    with pytest.raises(ConfigError, match="R1"):
        config_for(fed, threshold=3, collusion_bound=2)
    config = config_for(fed)
    object.__setattr__(config, "threshold", 3)
    colluders = frozenset({3, 4})
    attack = EquivocatingServer(fed, config, victim=0, group_b=frozenset({2}), colluders=colluders)
    run_round(
        config, fed, inputs_for(5), server_hook=attack.server_hook, client_hook=attack.client_hook
    )
    seeds, keys = revealed_owners(attack.recorder.unmask_responses(), 0)
    assert len(seeds - colluders) + 2 >= 3
    assert len(keys - colluders) + 2 >= 3  # both secrets of client 0 are now in reach


def test_unmask_request_for_a_different_survivor_set_is_refused() -> None:
    """Asking for the mask key of a client the consistency check called alive (both shares)."""
    fed = federation(5)
    config = config_for(fed)

    def hook(envelope: Envelope) -> Sequence[Envelope]:
        message = envelope.message
        if isinstance(message, UnmaskRequest):
            message = resign(message, fed.server_key, survivors=message.survivors[1:])
        return (Envelope(envelope.recipient, message),)

    recorder = Recorder()
    outcome = run_round(config, fed, inputs_for(5), server_hook=hook, client_hook=recorder)
    assert recorder.unmask_responses() == []
    assert outcome.result is None
    for i in range(5):
        assert outcome.client_stages[i] is Stage.ABORTED
        assert any(isinstance(e, UnmaskRefused) for e in outcome.client_events[i])


def test_different_key_directories_abort_before_unmasking() -> None:
    """The server hides client 4 from half of the clients (different U1)."""
    fed = federation(5)
    config = config_for(fed)

    def hook(envelope: Envelope) -> Sequence[Envelope]:
        message = envelope.message
        if isinstance(message, KeyDirectory) and envelope.recipient in (0, 1):
            message = resign(message, fed.server_key, advertisements=message.advertisements[:-1])
        return (Envelope(envelope.recipient, message),)

    recorder = Recorder()
    outcome = run_round(config, fed, inputs_for(5), server_hook=hook, client_hook=recorder)
    assert recorder.unmask_responses() == []
    assert outcome.result is None


def test_different_signed_context_aborts_before_unmasking() -> None:
    """Clients that saw different signed context (e.g. other FedAMP weights) never unmask."""
    fed = federation(5)
    config = config_for(fed)
    context = [ContextItem("fedamp/weights", b"view-a")]
    other = {i: [ContextItem("fedamp/weights", b"view-b")] for i in (0, 1)}
    recorder = Recorder()
    outcome = run_round(
        config, fed, inputs_for(5), context=context, client_context=other, client_hook=recorder
    )
    assert recorder.unmask_responses() == []
    assert outcome.result is None


def test_different_parameters_abort_before_unmasking() -> None:
    """A client holding another config (here: another collusion bound) signs another transcript."""
    fed = federation(5)
    config = config_for(fed)
    assert config.collusion_bound == 2
    lenient = config_for(fed, collusion_bound=1)
    recorder = Recorder()
    outcome = run_round(
        config, fed, inputs_for(5), client_hook=recorder, client_configs={0: lenient, 1: lenient}
    )
    assert recorder.unmask_responses() == []
    assert outcome.result is None


def test_forged_advertisement_in_the_directory_aborts_clients() -> None:
    """The server injects an advertisement for client 2 with keys it controls (a Sybil)."""
    fed = federation(5)
    config = config_for(fed)
    mallory = config.mask_suite.generate_agreement_key().public_key().to_bytes()

    def hook(envelope: Envelope) -> Sequence[Envelope]:
        message = envelope.message
        if isinstance(message, KeyDirectory):
            forged = tuple(
                a if a.sender != 2 else dataclasses.replace(a, mask_key=mallory)
                for a in message.advertisements
            )
            message = resign(message, fed.server_key, advertisements=forged)
        return (Envelope(envelope.recipient, message),)

    outcome = run_round(config, fed, inputs_for(5), server_hook=hook)
    assert outcome.result is None
    assert all(outcome.client_stages[i] is Stage.ABORTED for i in range(5))
