"""One malicious bank in a run on the engine (in-memory transport): a bad dealer, a bad holder and
a false complaint are caught on their own signed messages, ledgered (``round.misbehaviour``), and
the round completes for the others (threat_model/attacks/test_bad_shares.py has the protocol-level
attacks and the plain-Shamir variant they break)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable

import numpy as np

from securefed.audit import EventType, verify_run
from securefed.personalize.modes import PersonalizationMode
from securefed.personalize.rounds import RoundParams
from securefed.runtime.engine import messages as m
from securefed.runtime.engine.settings import EngineSettings
from securefed.secagg import SecAggClient
from securefed.secagg.dealing import channel_key, decode_evidence, open_dealt, seal_shares
from securefed.secagg.messages import (
    Complaint,
    DealtShare,
    Message,
    RevealedShare,
    ShareBundle,
    ShareKeys,
    ShareReceipt,
    UnmaskResponse,
    decode,
)
from securefed.secagg.verify import verify_message
from securefed.testing import resign
from securefed.testing.harness import redeal
from securefed.testing.rounds import VectorFederation
from tests.runtime.engine import clustered, entries

N = 6
BAD, VICTIM = 2, 4
Rewrite = Callable[[Message], Message]


def off_polynomial(share: bytes) -> bytes:
    return share[:-1] + bytes([share[-1] ^ 1])


class Tamper:
    """A fault plan: in round 2, party BAD's outgoing protocol messages pass through
    ``rewrite`` (it re-signs with BAD's own identity key: BAD is the malicious bank)."""

    def __init__(self) -> None:
        self.rewrite: Rewrite = lambda message: message
        self.bundles: list[ShareBundle] = []  # what BAD was dealt (a false complaint quotes it)

    def request(self, node: int, request: m.Request) -> m.Request | None:
        if node == BAD and isinstance(request, m.Step):
            self.bundles += [
                message
                for message in map(decode, request.messages)
                if isinstance(message, ShareBundle)
            ]
        return request

    def reply(self, node: int, request: m.Request, reply: m.Reply) -> m.Reply | None:
        round_ = getattr(request, "round", None)
        if node != BAD or round_ != 2 or not isinstance(reply, m.Trained | m.StepReply):
            return reply
        messages = tuple(self.rewrite(decode(data)).to_bytes() for data in reply.messages)
        return dataclasses.replace(reply, messages=messages)


def run_with(
    rewrite_for: Callable[[VectorFederation], Rewrite], tmp_path: object
) -> tuple[list[object], dict[int, np.ndarray | None], list[np.ndarray], object]:
    settings = EngineSettings(
        mode=PersonalizationMode.FEDAVG, rounds=3, params=RoundParams(sketch_dim=16)
    )
    models = clustered(N, seed=3)
    plan = Tamper()
    run = VectorFederation(models, settings, seed=5, faults=plan, workdir=tmp_path)  # type: ignore[arg-type]
    run.plan = plan  # type: ignore[attr-defined]
    plan.rewrite = rewrite_for(run)
    with run:
        run.run()
        misbehaviour = [
            dict(e.payload) for e in entries(run, "server") if e.event is EventType.MISBEHAVIOUR
        ]
        for entry in misbehaviour:  # the evidence file is there, named by its hash
            path = run.workdir / "evidence" / f"round-{entry['round']}-bank-{entry['party']}.bin"
            data = path.read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry.pop("evidence_sha256")
            assert path.stat().st_mode & 0o777 == 0o600
            for message in decode_evidence(data):
                verify_message(
                    run.federation.roster,
                    message,
                    session_id=message.session_id,
                    round_=entry["round"],
                )
        received = {i: learner.received.get(2) for i, learner in enumerate(run.learners)}
        verdict = verify_run(run.workdir)
    return misbehaviour, received, models, verdict


def protocol_client(run: VectorFederation, index: int) -> SecAggClient:
    pending = run.institutions[index]._pending  # test-only: the malicious bank's own state
    assert pending is not None
    return pending.client


def assert_round_two_is_the_mean_of(
    received: dict[int, np.ndarray | None], models: list[np.ndarray], members: set[int]
) -> None:
    mean = np.mean([models[i] for i in sorted(members)], axis=0)
    for i in members:
        got = received[i]
        assert got is not None, i
        assert np.max(np.abs(got - mean)) < 1e-3


def test_a_bad_dealer_is_left_out_ledgered_and_the_round_completes(tmp_path: object) -> None:
    def rewrite_for(run: VectorFederation) -> Rewrite:
        key = run.federation.client_keys[BAD]

        def rewrite(message: Message) -> Message:
            if not isinstance(message, ShareKeys):
                return message
            client = protocol_client(run, BAD)
            aead = channel_key(
                client.config,
                own=(BAD, client._encryption_keys[VICTIM]),
                peer=(VICTIM, client._peer_keys(VICTIM)[0]),
                outgoing=True,
            )

            def corrupt(item: DealtShare) -> DealtShare:
                if item.recipient != VICTIM:
                    return item
                mask_share, seed_share = open_dealt(client.config, aead, item)
                ciphertext = seal_shares(
                    client.config,
                    aead,
                    dealer=BAD,
                    holder=VICTIM,
                    mask_share=off_polynomial(mask_share),
                    seed_share=seed_share,
                )
                return dataclasses.replace(item, ciphertext=ciphertext)

            return redeal(message, key, corrupt, dealer=client)

        return rewrite

    misbehaviour, received, models, verdict = run_with(rewrite_for, tmp_path)
    assert misbehaviour == [{"round": 2, "party": BAD, "kind": "bad-shares", "accuser": VICTIM}]
    assert_round_two_is_the_mean_of(received, models, set(range(N)) - {BAD})
    assert received[BAD] is None
    assert verdict.ok, verdict  # type: ignore[attr-defined]


def test_a_false_complaint_leaves_the_complainer_out(tmp_path: object) -> None:
    def rewrite_for(run: VectorFederation) -> Rewrite:
        def rewrite(message: Message) -> Message:
            if not isinstance(message, ShareReceipt):
                return message
            own = protocol_client(run, BAD)._encryption_keys[VICTIM].secret_bytes_for_sharing()
            bundle = run.plan.bundles[-1]  # type: ignore[attr-defined]
            at = next(i for i, d in enumerate(bundle.dealt) if d.sender == VICTIM)
            commitment = next(c for c in bundle.commitments if c.sender == VICTIM)
            client = protocol_client(run, BAD)
            assert client._directory is not None
            index, size = client._leaf_position(VICTIM, set(client._directory.senders))
            complaint = Complaint(
                VICTIM, own, bundle.dealt[at], commitment, index, size, bundle.proofs[at]
            )
            return resign(message, run.federation.client_keys[BAD], complaints=(complaint,))

        return rewrite

    misbehaviour, received, models, verdict = run_with(rewrite_for, tmp_path)
    assert misbehaviour == [{"round": 2, "party": BAD, "kind": "false-complaint", "accuser": -1}]
    assert_round_two_is_the_mean_of(received, models, set(range(N)) - {BAD})
    assert verdict.ok, verdict  # type: ignore[attr-defined]


def test_a_bad_holder_is_named_its_shares_ignored_and_the_round_completes(
    tmp_path: object,
) -> None:
    def rewrite_for(run: VectorFederation) -> Rewrite:
        def rewrite(message: Message) -> Message:
            if not isinstance(message, UnmaskResponse):
                return message
            shares = tuple(
                RevealedShare(s.owner, off_polynomial(s.share)) for s in message.self_seed_shares
            )
            return resign(message, run.federation.client_keys[BAD], self_seed_shares=shares)

        return rewrite

    misbehaviour, received, models, verdict = run_with(rewrite_for, tmp_path)
    assert misbehaviour == [{"round": 2, "party": BAD, "kind": "bad-share-revealed", "accuser": -1}]
    assert_round_two_is_the_mean_of(received, models, set(range(N)))  # BAD's input still counts
    assert verdict.ok, verdict  # type: ignore[attr-defined]
