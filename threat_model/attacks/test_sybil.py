"""Sybils: clients the server controls, off the pinned roster (refused) and on it (residual risk).

ADVERSARY: a malicious server that creates identities it controls (it holds their signing keys)
and runs protocol clients under them, to isolate a victim: if the only other inputs in a sum are
its own, the sum minus them is the victim's input.
(a) Off the roster: it runs the round on a roster of its own with a Sybil added (index N), or
    with roster indices re-keyed to its Sybils (impersonation), and puts their signed
    advertisements in the key directory.
(b) On the roster: institutions admitted to the pinned roster that are in fact the server's (or
    collude with it) -- indistinguishable, to the protocol, from colluding clients.

ASSUMPTIONS: every honest client holds the pinned roster (checked out of band,
`docs/keys-and-roster.md`) in its RoundConfig; N = 5, t = 4, declared collusion bound n_C = 2
(R1: 2t - N > n_C); sum mode. The server decides who "dropped" (it can ignore any input).

DEFENCE (expected and measured):
(a) refused. Every advertisement in the key directory is checked against the client's own
    pinned roster: an unlisted index fails ("sender 5 is not in the roster"), a listed index
    signed by another key fails ("bad signature"). The honest clients abort at the key
    directory, before they seal a share or send a masked input; no output holds an honest
    input (the server's Sybils may finish a round among themselves).
(b) RESIDUAL RISK, bounded by the threshold. Roster Sybils sign and unmask like honest clients,
    so the server can fake-drop honest clients until the survivor set is t clients. With
    k <= n_C Sybils every sum it obtains mixes at least t - k >= 2 honest inputs (measured: with
    Sybils {3, 4} and client 2 dropped, the server learns x_0 + x_1 exactly and nothing finer);
    one more fake dropout (U3 of t - 1) is refused by the honest clients themselves ("fewer than
    t survivors") before they sign or reveal anything. With k > n_C Sybils the bound is gone: 3
    Sybils of 5 and one fake dropout expose a single input exactly (measured). Knobs: roster
    admission (a governance control outside the protocol), t, and the declared n_C that t must
    cover; the threat model's guarantees assume at most n_C colluders.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from unittest import mock

import numpy as np

from securefed.crypto import SigningKey, get_suite
from securefed.secagg import (
    ClientParty,
    Roster,
    RoundConfig,
    Stage,
    default_threshold,
)
from securefed.secagg.messages import (
    ConsistencyRequest,
    ConsistencySignature,
    MaskedInput,
    Message,
    UnmaskResponse,
)
from securefed.secagg.server import Envelope, SecAggServer
from securefed.testing import Federation, RoundOutcome, make_federation, resign, run_round
from tests.secagg.conftest import config_for
from threat_model.attacks import seeded_rng

N = 5
DIM = 16
_FED: list[Federation] = []


def federation() -> Federation:
    if not _FED:
        _FED.append(make_federation(N))
    return _FED[0]


def pinned() -> RoundConfig:
    return config_for(federation(), dim=DIM)


def inputs(n: int = N) -> dict[int, np.ndarray]:
    rng = seeded_rng(41)
    return {i: rng.uniform(-4.0, 4.0, DIM) for i in range(n)}


@dataclasses.dataclass
class Sent:
    """Client hook: records what each client sent; drops the inputs of ``fake_dropped``."""

    fake_dropped: frozenset[int] = frozenset()
    sent: list[tuple[int, Message]] = dataclasses.field(default_factory=list)

    def __call__(self, sender: int, message: Message) -> Sequence[Message]:
        self.sent.append((sender, message))
        if sender in self.fake_dropped and isinstance(message, MaskedInput):
            return ()
        return (message,)

    def kinds(self, sender: int) -> list[str]:
        return [type(m).__name__ for s, m in self.sent if s == sender]


def sybil_federation(clients: Sequence[ClientParty], keys: Sequence[SigningKey]) -> Federation:
    """The server's own roster: same server and suite, the clients it chose."""
    fed = federation()
    roster = Roster(fed.roster.suite, fed.roster.server, tuple(clients))
    return Federation(roster, fed.server_key, tuple(keys))


def run_with_sybils(fake: Federation, honest: Sequence[int]) -> tuple[RoundOutcome, Sent]:
    """The server (and its Sybils) on the fake roster; the honest clients on the pinned one."""
    config = dataclasses.replace(pinned(), roster=fake.roster, threshold=0, collusion_bound=-1)
    recorder = Sent()
    # A malicious server puts every advertisement it got into its directory, even those whose
    # share keys do not fit its own roster's graph (the honest code would refuse them).
    with mock.patch.object(SecAggServer, "_check_advert", return_value=None):
        outcome = run_round(
            config,
            fake,
            inputs(fake.roster.size),
            client_hook=recorder,
            client_configs={i: pinned() for i in honest},
        )
    return outcome, recorder


def assert_refused_at_the_key_directory(
    outcome: RoundOutcome, recorder: Sent, honest: Sequence[int], reason: str
) -> None:
    for i in honest:
        assert outcome.client_stages[i] is Stage.ABORTED
        assert reason in str(outcome.client_errors[i].__cause__)
        assert recorder.kinds(i) == ["AdvertiseKeys"]  # no share sealed, no input sent
    # Whatever the server's own round produces (e.g. a sum of Sybil inputs), no honest input
    # is in it.
    assert outcome.result is None or not set(outcome.result.contributors) & set(honest)


def test_a_sybil_added_to_the_roster_by_the_server_is_refused() -> None:
    """(a) The server runs a 6-client roster: the pinned 5 plus its Sybil at index 5."""
    fed = federation()
    sybil_key = get_suite("default").generate_signing_key()
    clients = (*fed.roster.clients, ClientParty("sybil", N, sybil_key.verify_key()))
    fake = sybil_federation(clients, (*fed.client_keys, sybil_key))
    outcome, recorder = run_with_sybils(fake, honest=range(N))
    print(f"\n[sybil] added index: honest errors={sorted(outcome.client_errors)}")
    assert_refused_at_the_key_directory(
        outcome, recorder, range(N), f"sender {N} is not in the roster"
    )
    assert outcome.result is None


def test_sybils_impersonating_roster_members_cannot_isolate_a_victim() -> None:
    """(a) Victim 0 alone with Sybils that claim indices 1-4 under keys the server made."""
    fed = federation()
    suite = get_suite("default")
    sybil_keys = [suite.generate_signing_key() for _ in range(1, N)]
    clients = (
        fed.roster.clients[0],
        *(ClientParty(f"bank-{i}", i, k.verify_key()) for i, k in enumerate(sybil_keys, 1)),
    )
    fake = sybil_federation(clients, (fed.client_keys[0], *sybil_keys))
    outcome, recorder = run_with_sybils(fake, honest=[0])
    assert_refused_at_the_key_directory(outcome, recorder, [0], "bad signature on AdvertiseKeys")
    # The directory was fine on the fake roster: the Sybils went on and summed only their own
    # inputs. The victim's pinned roster alone stopped it.
    assert all(recorder.kinds(i)[:2] == ["AdvertiseKeys", "ShareKeys"] for i in range(1, N))
    assert outcome.result is not None
    assert outcome.result.contributors == (1, 2, 3, 4)


def test_roster_sybils_learn_at_least_t_minus_k_honest_inputs() -> None:
    """(b) Sybils {3, 4} (k = n_C = 2) and one fake dropout: the sum of 2 honest inputs."""
    config = pinned()
    t, n_c = config.threshold, config.collusion_bound
    sybils = (3, 4)
    assert len(sybils) == n_c
    recorder = Sent(fake_dropped=frozenset({2}))
    outcome = run_round(config, federation(), inputs(), client_hook=recorder)
    assert outcome.result is not None
    assert outcome.result.contributors == (0, 1, 3, 4)
    learned = outcome.result.values - sum(inputs()[s] for s in sybils)
    honest_sum = inputs()[0] + inputs()[1]
    assert np.max(np.abs(learned - honest_sum)) <= outcome.result.error_bound
    print(f"[sybil] k={len(sybils)} on the roster: server learns x_0 + x_1 (t - k = {t - n_c})")
    # The bound t - k >= 2 for k = n_C holds for every roster size with the default threshold.
    for n in range(4, 40):
        t_n = default_threshold(n)
        assert t_n - (2 * t_n - n - 1) >= 2


def test_one_more_fake_dropout_is_refused_by_the_honest_clients() -> None:
    """(b) The server tells client 0 that U3 = {0, 3, 4} (t - 1 = 3 survivors)."""
    fed = federation()
    recorder = Sent()

    def hook(envelope: Envelope) -> Sequence[Envelope]:
        message = envelope.message
        if isinstance(message, ConsistencyRequest) and envelope.recipient == 0:
            message = resign(message, fed.server_key, survivors=(0, 3, 4))
        return (Envelope(envelope.recipient, message),)

    outcome = run_round(pinned(), fed, inputs(), client_hook=recorder, server_hook=hook)
    assert outcome.client_stages[0] is Stage.ABORTED
    assert "fewer than t survivors" in str(outcome.client_errors[0].__cause__)
    signed_or_revealed = (ConsistencySignature, UnmaskResponse)
    assert not [m for s, m in recorder.sent if s == 0 and isinstance(m, signed_or_revealed)]


def test_more_sybils_than_n_c_expose_one_input() -> None:
    """(b) RESIDUAL RISK: Sybils {2, 3, 4} (k = 3 > n_C = 2), client 1 fake-dropped: x_0."""
    config = pinned()
    sybils = (2, 3, 4)
    assert len(sybils) > config.collusion_bound
    recorder = Sent(fake_dropped=frozenset({1}))
    outcome = run_round(config, federation(), inputs(), client_hook=recorder)
    assert outcome.result is not None
    assert outcome.result.contributors == (0, 2, 3, 4)
    learned = outcome.result.values - sum(inputs()[s] for s in sybils)
    error = np.max(np.abs(learned - inputs()[0]))
    print(f"[sybil] k=3 > n_C: x_0 recovered, max error {error:.2g}")
    assert error <= outcome.result.error_bound
