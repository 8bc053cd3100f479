"""One malicious bank against the round: bad dealers, bad holders, false complaints.

ADVERSARY: one client of the pinned roster (its identity key is genuine, so everything it signs
verifies), alone -- the server is honest here. Goal: stop the round (availability), or get an
honest client thrown out. Moves: (a) as a **dealer**, hand one holder a share that is off its
polynomial, or share a mask key other than the one it advertised; (b) as a **holder**, return a
wrong share at unmasking; (c) complain about an honest dealer's good shares.

ASSUMPTIONS: N = 7 (t = 5) or N = 5 (t = 4), sum mode, the complete graph. The weaker variant is
the plain Shamir scheme that securefed shipped before issue 20 (``ShareScheme.SHAMIR``, kept for
benchmarks): a hash commitment to the self seed only, shares nobody can check.

ATTACK on plain Shamir (measured): a dealer that gives the lowest-index holder a wrong self-seed
share aborts the round at unmasking -- the share is among the first t, the rebuilt seed fails its
commitment, and nothing says whose share was wrong (before issue 20 the server searched up to 2000
t-subsets and blamed the *owner*; a bad share among the first few holders still aborted it); a
holder that returns a wrong share with only t responders does the same. Every round, for as long
as that bank takes part.

DEFENCE (``ShareScheme.FELDMAN``, the default; securefed/secagg/sharing.py and dealing.py):
each dealer signs Feldman commitments to both polynomials; the server checks in public that the
mask-key polynomial shares the advertised key and that both have the dealer's threshold (else the
dealer is left out before any share is forwarded: BAD_COMMITMENT); each holder checks its shares
on receipt and complains with its key for that pair, which lets the server open the dealer's
DealtShare -- *signed* through the Merkle root over all its dealt shares in its signed commitment,
the complaint carrying the share's inclusion proof -- and judge (dealer at fault: BAD_SHARES;
holder lied: FALSE_COMPLAINT), all before anything is masked. At unmasking every revealed share
is checked against the commitment: a wrong one is ignored and its holder named (ShareRejected).
The measured outcome: in each case the round completes with the correct sum of the others.

RESIDUAL: a client can still mask with a seed other than the one it shared, or send any ring
vector as its masked input: that is a wrong *input* (its contribution to the sum is garbage), not
a stopped round; securefed has no proof of input validity (threat_model/residual_risk.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pytest

import securefed.secagg.client
from securefed.crypto import merkle
from securefed.secagg import (
    ClientsExcluded,
    ComplaintJudged,
    ExclusionReason,
    MessageRejected,
    RoundConfig,
    SecAggClient,
    ShareRejected,
    ShareScheme,
    Stage,
)
from securefed.secagg.dealing import (
    Verdict,
    channel_key,
    decode_evidence,
    encode_evidence,
    judge_complaint,
    open_dealt,
    seal_shares,
)
from securefed.secagg.graph import build_graph
from securefed.secagg.messages import (
    AdvertiseKeys,
    Complaint,
    DealtShare,
    Message,
    RevealedShare,
    ShareBundle,
    ShareKeys,
    ShareReceipt,
    UnmaskResponse,
    dealt_leaves,
    join_proof,
)
from securefed.secagg.server import Envelope
from securefed.secagg.sharing import deal
from securefed.secagg.verify import verify_client_signature
from securefed.testing import Federation, RoundOutcome, resign, run_round
from securefed.testing.harness import redeal
from tests.secagg.conftest import config_for, federation, inputs_for

DEALER, HOLDER = 3, 0


def expected_sum(n: int, contributors: Sequence[int]) -> np.ndarray:
    return np.asarray(sum(inputs_for(n)[i] for i in contributors))


def assert_sum_of(outcome: RoundOutcome, n: int, contributors: tuple[int, ...]) -> None:
    assert outcome.result is not None, (outcome.server_events, outcome.client_errors)
    assert outcome.result.contributors == contributors
    error = np.max(np.abs(outcome.result.values - expected_sum(n, contributors)))
    assert error <= outcome.result.error_bound


def excluded(outcome: RoundOutcome, reason: ExclusionReason) -> set[int]:
    return {
        c
        for e in outcome.server_events
        if isinstance(e, ClientsExcluded) and e.reason is reason
        for c in e.clients
    }


class Spy:
    """Captures the clients run_round builds, so a hook can use the dealer's own keys (a
    malicious dealer knows them)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.clients: dict[int, SecAggClient] = {}
        original = SecAggClient.__init__
        spy = self

        def init(client: SecAggClient, *args: object, **kwargs: object) -> None:
            original(client, *args, **kwargs)  # type: ignore[arg-type]
            spy.clients[client.index] = client

        monkeypatch.setattr(SecAggClient, "__init__", init)


def off_polynomial(share: bytes) -> bytes:
    """The encoded share with its y moved by one (still well formed, no longer on the
    polynomial)."""
    return share[:-1] + bytes([share[-1] ^ 1])


def corrupt_dealt(fed: Federation, spy: Spy, keys: ShareKeys, holder: int) -> ShareKeys:
    """``keys`` with the self-seed share for ``holder`` moved off the polynomial, re-sealed
    under the real channel key, committed to (the dealt root) and re-signed by the dealer (so
    it opens and verifies)."""
    dealer = spy.clients[keys.sender]
    config = dealer.config
    aead = channel_key(  # test-only peek: the dealer's own key for this pair
        config,
        own=(keys.sender, dealer._encryption_keys[holder]),
        peer=(holder, dealer._peer_keys(holder)[0]),
        outgoing=True,
    )

    def corrupt(item: DealtShare) -> DealtShare:
        if item.recipient != holder:
            return item
        mask_share, seed_share = open_dealt(config, aead, item)
        ciphertext = seal_shares(
            config,
            aead,
            dealer=keys.sender,
            holder=holder,
            mask_share=mask_share,
            seed_share=off_polynomial(seed_share),
        )
        return dataclasses.replace(item, ciphertext=ciphertext)

    return redeal(keys, fed.client_keys[keys.sender], corrupt, dealer=dealer)


def bad_dealer_round(
    monkeypatch: pytest.MonkeyPatch, scheme: ShareScheme, holder: int = HOLDER
) -> RoundOutcome:
    fed = federation(7)
    spy = Spy(monkeypatch)

    def hook(sender: int, message: Message) -> Sequence[Message]:
        if sender == DEALER and isinstance(message, ShareKeys):
            return (corrupt_dealt(fed, spy, message, holder),)
        return (message,)

    return run_round(config_for(fed, sharing=scheme), fed, inputs_for(7), client_hook=hook)


def test_bad_dealer_stops_every_plain_shamir_round(monkeypatch: pytest.MonkeyPatch) -> None:
    outcome = bad_dealer_round(monkeypatch, ShareScheme.SHAMIR)
    assert outcome.aborted
    assert outcome.result is None
    print(f"\n[bad dealer] plain Shamir: round aborted: {outcome.server_events[-1]}")


def test_bad_dealer_is_excluded_before_masking_and_the_round_completes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    outcome = bad_dealer_round(monkeypatch, ShareScheme.FELDMAN)
    judged = [e for e in outcome.server_events if isinstance(e, ComplaintJudged)]
    assert [(e.dealer, e.holder, e.verdict) for e in judged] == [
        (DEALER, HOLDER, Verdict.DEALER_AT_FAULT.value)
    ]
    assert judged[0].stage is Stage.VERIFY  # before any masked input
    assert excluded(outcome, ExclusionReason.BAD_SHARES) == {DEALER}
    assert outcome.client_stages[DEALER] is Stage.ABORTED
    assert_sum_of(outcome, 7, (0, 1, 2, 4, 5, 6))
    print(f"\n[bad dealer] Feldman: {judged[0]}; round completed without client {DEALER}")


def test_the_evidence_convicts_the_dealer_for_anyone_who_reruns_the_judgement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the server keeps (and the runtime writes next to its ledger) is enough: decoded
    from its file, every message verifies under the roster and the judgement comes out the
    same."""
    outcome = bad_dealer_round(monkeypatch, ShareScheme.FELDMAN)
    assert outcome.server is not None
    config = outcome.server.config
    evidence = decode_evidence(encode_evidence(outcome.server.evidence(DEALER)))
    for message in evidence:
        verify_client_signature(config, message)
    dealer_advert, holder_advert, receipt = evidence
    assert isinstance(dealer_advert, AdvertiseKeys)
    assert isinstance(holder_advert, AdvertiseKeys)
    assert isinstance(receipt, ShareReceipt)
    (complaint,) = receipt.complaints
    verdict = judge_complaint(
        config,
        build_graph(config),
        complaint=complaint,
        holder_advert=holder_advert,
        dealer_advert=dealer_advert,
    )
    assert verdict is Verdict.DEALER_AT_FAULT
    assert outcome.server.evidence(HOLDER) == ()  # the honest holder is convicted of nothing


def test_a_dealer_sharing_another_mask_key_is_excluded_before_any_share_goes_out() -> None:
    """The dealer commits to shares of a key other than its advertised mask key."""
    fed = federation(7)
    config = config_for(fed)

    def hook(sender: int, message: Message) -> Sequence[Message]:
        if sender == DEALER and isinstance(message, ShareKeys):
            other = config.mask_suite.generate_agreement_key().secret_bytes_for_sharing()
            fake = deal(
                config.sharing,
                mask_key=other,
                self_seed=bytes(range(1, 33)),
                threshold=config.threshold,
                holders=range(7),
            )
            commitment = resign(
                message.commitment,
                fed.client_keys[DEALER],
                mask_key_polynomial=fake.mask_key_polynomial,
            )
            return (resign(message, fed.client_keys[DEALER], commitment=commitment),)
        return (message,)

    outcome = run_round(config, fed, inputs_for(7), client_hook=hook)
    assert excluded(outcome, ExclusionReason.BAD_COMMITMENT) == {DEALER}
    assert not any(isinstance(e, ComplaintJudged) for e in outcome.server_events)
    assert_sum_of(outcome, 7, (0, 1, 2, 4, 5, 6))


def false_complaint_hook(fed: Federation, spy: Spy, key: bytes | None) -> object:
    """Holder 0 complains about dealer 3's good shares, with the dealer's real signed messages
    (taken from its ShareKeys on the way) and its real key for the pair, or a made-up one."""
    dealer_keys: list[ShareKeys] = []

    def hook(sender: int, message: Message) -> Sequence[Message]:
        if sender == DEALER and isinstance(message, ShareKeys):
            dealer_keys.append(message)
        if sender == HOLDER and isinstance(message, ShareReceipt):
            own = spy.clients[HOLDER]._encryption_keys[DEALER].secret_bytes_for_sharing()
            (keys,) = dealer_keys
            index = next(i for i, d in enumerate(keys.dealt) if d.recipient == HOLDER)
            _, proofs = merkle.inclusion_proofs(dealt_leaves(keys.dealt))
            complaint = Complaint(
                DEALER,
                own if key is None else key,
                keys.dealt[index],
                keys.commitment,
                index,
                len(keys.dealt),
                join_proof(proofs[index]),
            )
            return (resign(message, fed.client_keys[HOLDER], complaints=(complaint,)),)
        return (message,)

    return hook


@pytest.mark.parametrize("revealed", ["its real key", "a made-up key"])
def test_a_false_complaint_convicts_the_complaining_holder(
    monkeypatch: pytest.MonkeyPatch, revealed: str
) -> None:
    """Holder 0 complains about honest dealer 3: the dealt share opens and verifies, so the
    holder is left out and the dealer stays."""
    fed = federation(7)
    spy = Spy(monkeypatch)
    made_up = None if revealed == "its real key" else bytes(range(7, 39))
    hook = false_complaint_hook(fed, spy, made_up)
    outcome = run_round(config_for(fed), fed, inputs_for(7), client_hook=hook)  # type: ignore[arg-type]
    judged = [
        (e.dealer, e.holder, e.verdict)
        for e in outcome.server_events
        if isinstance(e, ComplaintJudged)
    ]
    assert judged == [(DEALER, HOLDER, Verdict.FALSE_COMPLAINT.value)]
    assert excluded(outcome, ExclusionReason.FALSE_COMPLAINT) == {HOLDER}
    assert_sum_of(outcome, 7, (1, 2, 3, 4, 5, 6))


def corrupt_revealed(fed: Federation, response: UnmaskResponse) -> Message:
    """Every self-seed share in ``response`` off its polynomial, re-signed by its sender."""
    shares = tuple(
        RevealedShare(s.owner, off_polynomial(s.share)) for s in response.self_seed_shares
    )
    return resign(response, fed.client_keys[response.sender], self_seed_shares=shares)


def bad_holder_round(scheme: ShareScheme) -> RoundOutcome:
    """Holder 0 returns wrong self-seed shares; client 4 never answers the unmask request, so
    exactly t = 4 of 5 respond and every reconstruction needs holder 0's share."""
    fed = federation(5)

    def hook(sender: int, message: Message) -> Sequence[Message]:
        if sender == HOLDER and isinstance(message, UnmaskResponse):
            return (corrupt_revealed(fed, message),)
        return (message,)

    return run_round(
        config_for(fed, sharing=scheme),
        fed,
        inputs_for(5),
        client_hook=hook,
        dropouts={4: Stage.UNMASK},
    )


def test_bad_holder_stops_a_plain_shamir_round() -> None:
    outcome = bad_holder_round(ShareScheme.SHAMIR)
    assert outcome.aborted
    assert not any(isinstance(e, ShareRejected) for e in outcome.server_events)  # nobody named


def test_bad_holder_is_named_and_ignored_and_the_round_completes() -> None:
    """With 6 of 7 responding there are t + 1 shares: holder 0's wrong ones are named and
    skipped (no subset search), the others rebuild every seed."""
    fed = federation(7)

    def hook(sender: int, message: Message) -> Sequence[Message]:
        if sender == HOLDER and isinstance(message, UnmaskResponse):
            return (corrupt_revealed(fed, message),)
        return (message,)

    outcome = run_round(
        config_for(fed), fed, inputs_for(7), client_hook=hook, dropouts={6: Stage.UNMASK}
    )
    named = {e.owner: e.holders for e in outcome.server_events if isinstance(e, ShareRejected)}
    assert named == dict.fromkeys(range(7), (HOLDER,))
    assert_sum_of(outcome, 7, tuple(range(7)))
    print(f"\n[bad holder] Feldman: shares of holder {HOLDER} rejected for owners {sorted(named)}")


def test_with_only_t_responders_a_bad_holder_still_ends_the_round_but_is_named() -> None:
    """t responders and one of them lying: too few valid shares remain; the round aborts (the
    liveness bound: t valid shares are needed), and the liar is named."""
    outcome = bad_holder_round(ShareScheme.FELDMAN)
    assert outcome.aborted
    named = {h for e in outcome.server_events if isinstance(e, ShareRejected) for h in e.holders}
    assert named == {HOLDER}


def test_dealt_shares_are_committed_so_the_server_cannot_frame_a_holder() -> None:
    """A server that alters a dealt share in the bundle: the share is no longer under the
    dealer's signed root, the holder's inclusion check fails and the holder aborts (a server
    fault), instead of complaining about an honest dealer."""
    fed = federation(5)

    def server_hook(envelope: object) -> Sequence[object]:
        message = envelope.message  # type: ignore[attr-defined]
        if type(message).__name__ == "ShareBundle" and envelope.recipient == HOLDER:  # type: ignore[attr-defined]
            dealt = list(message.dealt)
            first = dealt[0]
            forged = DealtShare(
                first.session_id,
                first.round,
                first.sender,
                first.recipient,
                first.ciphertext[:-1] + bytes([first.ciphertext[-1] ^ 1]),
                first.signature,
            )
            dealt[0] = forged
            message = resign(message, fed.server_key, dealt=tuple(dealt))
            return (type(envelope)(HOLDER, message),)
        return (envelope,)

    outcome = run_round(config_for(fed), fed, inputs_for(5), server_hook=server_hook)  # type: ignore[arg-type]
    assert outcome.client_stages[HOLDER] is Stage.ABORTED
    assert "not under its dealer's signed root" in str(outcome.client_errors[HOLDER])
    assert not any(isinstance(e, ComplaintJudged) for e in outcome.server_events)


# --- found by an adversarial review of this construction (each failed before its fix) ---------


def test_a_dealer_signing_two_versions_cannot_frame_the_holder_through_the_server() -> None:
    """A malicious server and dealer 3: the dealer commits (a second signed commitment, another
    dealt root) to a second, broken DealtShare for honest holder 0 and the server puts both in
    0's bundle. Before the fix the judge opened the dealer's *other*, good version from
    ShareKeys and convicted the honest holder of a false complaint. Now the complaint carries
    the dealer's messages exactly as the holder checked them: the dealer is convicted on its
    own signature."""
    fed = federation(7)
    recipients = [v for v in range(7) if v != DEALER]
    position = recipients.index(HOLDER)

    def second_version(message: ShareBundle) -> ShareBundle:
        at = next(i for i, d in enumerate(message.dealt) if d.sender == DEALER)
        item = message.dealt[at]
        broken = dataclasses.replace(
            item, ciphertext=item.ciphertext[:-1] + bytes([item.ciphertext[-1] ^ 1])
        )
        leaves = [b"filler %d" % i for i in range(len(recipients))]
        leaves[position] = broken.signed_payload()
        root, proofs = merkle.inclusion_proofs(leaves)
        commitments = tuple(
            resign(c, fed.client_keys[DEALER], dealt_root=root) if c.sender == DEALER else c
            for c in message.commitments
        )
        dealt = (*message.dealt[:at], broken, *message.dealt[at + 1 :])
        paths = list(message.proofs)
        paths[at] = join_proof(proofs[position])
        return resign(  # type: ignore[return-value]
            message,
            fed.server_key,
            commitments=commitments,
            dealt=dealt,
            proofs=tuple(paths),
        )

    def server_hook(envelope: Envelope) -> Sequence[Envelope]:
        message = envelope.message
        if isinstance(message, ShareBundle) and message.recipient == HOLDER:
            message = second_version(message)
        return (Envelope(envelope.recipient, message),)

    outcome = run_round(config_for(fed), fed, inputs_for(7), server_hook=server_hook)
    judged = [
        (e.dealer, e.holder, e.verdict)
        for e in outcome.server_events
        if isinstance(e, ComplaintJudged)
    ]
    assert judged == [(DEALER, HOLDER, Verdict.DEALER_AT_FAULT.value)]
    assert excluded(outcome, ExclusionReason.FALSE_COMPLAINT) == set()
    assert_sum_of(outcome, 7, (0, 1, 2, 4, 5, 6))


def test_a_small_order_share_key_is_refused_at_advertisement() -> None:
    """Client 3 advertises the all-zero X25519 point as its share key for every neighbour:
    every agreement with it would be the all-zero secret, and each honest client used to abort
    while dealing. The key is refused when it loads: client 3 is out of the directory, the
    round completes for the others."""
    fed = federation(7)

    def hook(sender: int, message: Message) -> Sequence[Message]:
        if sender == DEALER and isinstance(message, AdvertiseKeys):
            zeros = (bytes(32),) * len(message.encryption_keys)
            return (resign(message, fed.client_keys[DEALER], encryption_keys=zeros),)
        return (message,)

    outcome = run_round(config_for(fed), fed, inputs_for(7), client_hook=hook)
    refused = [e for e in outcome.server_events if isinstance(e, MessageRejected)]
    assert [e.sender for e in refused] == [DEALER]
    assert "small order" in refused[0].reason
    assert_sum_of(outcome, 7, (0, 1, 2, 4, 5, 6))


def test_a_self_seed_hash_that_does_not_match_the_polynomial_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dealer 3 signs a hash commitment to another seed than the one its polynomial shares:
    the polynomial is the commitment under verifiable sharing, so unmasking (which used to fail
    the hash check, naming nobody) goes through."""
    fed = federation(7)
    honest = securefed.secagg.client.self_seed_commitment

    def lying(config: RoundConfig, owner: int, seed: bytes) -> bytes:
        return bytes(32) if owner == DEALER else honest(config, owner, seed)

    monkeypatch.setattr(securefed.secagg.client, "self_seed_commitment", lying)
    outcome = run_round(config_for(fed), fed, inputs_for(7))
    assert_sum_of(outcome, 7, tuple(range(7)))


def test_a_self_seed_polynomial_with_carry_is_refused_in_public() -> None:
    """Dealer 3 marks its self-seed commitment with carry 1, so that the rebuilt value would
    exceed 32 bytes and unmasking would fail naming nobody: the public check refuses it before
    any share goes out."""
    fed = federation(7)

    def hook(sender: int, message: Message) -> Sequence[Message]:
        if sender == DEALER and isinstance(message, ShareKeys):
            polynomial = message.commitment.self_seed_polynomial
            carried = polynomial[:1] + b"\x01" + polynomial[2:]
            commitment = resign(
                message.commitment, fed.client_keys[DEALER], self_seed_polynomial=carried
            )
            return (resign(message, fed.client_keys[DEALER], commitment=commitment),)
        return (message,)

    outcome = run_round(config_for(fed), fed, inputs_for(7), client_hook=hook)
    assert excluded(outcome, ExclusionReason.BAD_COMMITMENT) == {DEALER}
    assert_sum_of(outcome, 7, (0, 1, 2, 4, 5, 6))
