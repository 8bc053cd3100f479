"""Dealt shares on the wire: sealing them for one holder, opening them, and judging complaints.

The channel of a pair (dealer u, holder v) uses the two share-encryption keys that u and v
advertised *for each other* (``AdvertiseKeys.encryption_keys``, one per neighbour in the round's
fixed graph). That is what makes a complaint checkable by anyone without a proof system: a
holder whose shares from u fail its checks reveals its private key for the pair (u, v); with u's
advertised public key for v, that opens u's DealtShare -- **signed** by u through the Merkle root
over all its dealt shares in its signed ShareCommitment, the complaint carrying the share's
inclusion proof -- and the verdict follows:

* the ciphertext does not open, the plaintext is malformed, or a share is off u's committed
  polynomial: **u is at fault** (an honest dealer's ciphertext opens under the true key, and a
  holder cannot produce another key that opens it: AES-GCM tags fail under any other key except
  with probability 2^-128, and the revealed key must match the holder's signed advertisement);
* otherwise the shares are good and **the holder lied**.

The revealed key opens nothing but the (u, v) channel of this round: the shares u dealt to v (u is
at fault, or the holder already knew them) and those v dealt to u (v's own).
"""

from __future__ import annotations

from enum import Enum

from securefed.crypto import (
    Aead,
    AgreementPrivateKey,
    AgreementPublicKey,
    KeyPurpose,
    SharedSecret,
    merkle,
)
from securefed.crypto import derive_channel_key as _derive
from securefed.errors import CryptoError, ProtocolError, RemoteProtocolError
from securefed.secagg.config import RoundConfig
from securefed.secagg.graph import MaskingGraph
from securefed.secagg.messages import (
    AdvertiseKeys,
    Complaint,
    DealtShare,
    Message,
    decode,
    split_proof,
)
from securefed.secagg.sharing import check_commitments, check_held_share, share_bytes
from securefed.secagg.verify import check_round, verify_client_signature
from securefed.secagg.wire import Reader, Writer

__all__ = [
    "Verdict",
    "advertised_key",
    "channel_key",
    "decode_evidence",
    "encode_evidence",
    "judge_complaint",
    "open_dealt",
    "seal_shares",
    "share_associated_data",
]


class Verdict(Enum):
    """Who a complaint about a dealt share convicts."""

    DEALER_AT_FAULT = "dealer-at-fault"
    FALSE_COMPLAINT = "false-complaint"


def share_associated_data(config: RoundConfig, sender: int, recipient: int) -> bytes:
    """AEAD associated data of a sealed share: purpose, session, round, sender, recipient (R3)."""
    w = Writer().blob(b"securefed/v2/share").fixed(config.session_id, 32).u64(config.round)
    return w.u32(sender).u32(recipient).getvalue()


def advertised_key(
    config: RoundConfig, graph: MaskingGraph, advert: AdvertiseKeys, peer: int
) -> AgreementPublicKey:
    """The share-encryption key that ``advert``'s sender advertised for ``peer``.

    Raises:
        RemoteProtocolError: ``peer`` is not its neighbour, or the key list has the wrong length.
        InvalidKey: the key does not load in the roster's suite.
    """
    neighbours = graph.neighbours(advert.sender)
    if len(advert.encryption_keys) != len(neighbours):
        raise RemoteProtocolError(
            f"client {advert.sender} advertised {len(advert.encryption_keys)} share keys for "
            f"{len(neighbours)} neighbours"
        )
    if peer not in neighbours:
        raise RemoteProtocolError(f"clients {advert.sender} and {peer} are not neighbours")
    return config.suite.agreement_public_key(advert.encryption_keys[neighbours.index(peer)])


def channel_key(
    config: RoundConfig,
    *,
    own: tuple[int, AgreementPrivateKey],
    peer: tuple[int, AgreementPublicKey],
    outgoing: bool,
    secret: SharedSecret | None = None,
) -> Aead:
    """The AEAD of one direction of a pair's share channel, seen from ``own``'s side.
    ``secret``: the pair's agreement ``own``'s key with ``peer``'s, if the caller already holds
    it (one agreement serves both directions); computed here otherwise."""
    index, private = own
    return Aead(
        _derive(
            private.exchange(peer[1]) if secret is None else secret,
            purpose=KeyPurpose.SHARE,
            context=config.kdf_context,
            own=(index, private.public_key()),
            peer=peer,
            outgoing=outgoing,
        )
    )


def seal_shares(
    config: RoundConfig,
    aead: Aead,
    *,
    dealer: int,
    holder: int,
    mask_share: bytes,
    seed_share: bytes,
) -> bytes:
    """The ciphertext of a DealtShare: dealer, holder and the two encoded shares."""
    size = share_bytes(config.sharing)
    plaintext = Writer().u32(dealer).u32(holder).fixed(mask_share, size).fixed(seed_share, size)
    return aead.seal(
        plaintext.getvalue(), associated_data=share_associated_data(config, dealer, holder)
    )


def open_dealt(config: RoundConfig, aead: Aead, dealt: DealtShare) -> tuple[bytes, bytes]:
    """(mask-key share, self-seed share) from a DealtShare, encoded.

    Raises:
        CryptoError: the ciphertext does not open under ``aead``.
        RemoteProtocolError: the plaintext is malformed or names other parties.
    """
    plaintext = aead.open(
        dealt.ciphertext,
        associated_data=share_associated_data(config, dealt.sender, dealt.recipient),
    )
    size = share_bytes(config.sharing)
    r = Reader(plaintext)
    try:
        names = (r.u32(), r.u32())
        shares = (r.fixed(size), r.fixed(size))
        r.finish()
    except ProtocolError as exc:
        raise RemoteProtocolError("a dealt share is malformed") from exc
    if names != (dealt.sender, dealt.recipient):
        raise RemoteProtocolError("a dealt share names the wrong parties")
    return shares


_EVIDENCE_LABEL = b"securefed/v2/evidence"
_EVIDENCE_MESSAGE_LIMIT = 1 << 24


def encode_evidence(messages: tuple[Message, ...]) -> bytes:
    """The signed messages that convict a party (``SecAggServer.evidence``), as one file: a
    label, then each message's wire encoding, length-prefixed. Contains no secret of an honest
    party beyond what the judged round already exposed to the server."""
    w = Writer().blob(_EVIDENCE_LABEL)
    w.items(messages, lambda w, m: w.blob(m.to_bytes(), limit=_EVIDENCE_MESSAGE_LIMIT), limit=16)
    return w.getvalue()


def decode_evidence(data: bytes) -> tuple[Message, ...]:
    """Inverse of :func:`encode_evidence`; every message decoded (signatures are the reader's
    to check against the roster).

    Raises:
        RemoteProtocolError: anything malformed.
    """
    r = Reader(data)
    if r.blob() != _EVIDENCE_LABEL:
        raise RemoteProtocolError("not a securefed evidence file")
    messages = r.items(lambda r: decode(r.blob(limit=_EVIDENCE_MESSAGE_LIMIT)), limit=16)
    r.finish()
    return messages


def judge_complaint(
    config: RoundConfig,
    graph: MaskingGraph,
    *,
    complaint: Complaint,
    holder_advert: AdvertiseKeys,
    dealer_advert: AdvertiseKeys,
) -> Verdict:
    """Judge a holder's complaint about a dealer (module docstring). Pure: anyone holding the
    signed messages can rerun it (the server does, before masking; an auditor may later).

    The complaint carries the dealer's DealtShare and ShareCommitment exactly as the holder
    checked them: they must be this round's, the commitment signed by the dealer and the
    DealtShare under its ``dealt_root`` (the complaint's inclusion proof), and the DealtShare
    must be addressed to the holder (else the holder forged evidence: FALSE_COMPLAINT). A dealer
    that committed to two versions is judged on the one the holder got. A commitment that fails
    the public checks (:func:`securefed.secagg.sharing.check_commitments`) convicts the dealer
    too. The caller has checked the signatures of both advertisements.
    """
    holder, dealer = holder_advert.sender, dealer_advert.sender
    dealt, commitment = complaint.dealt, complaint.commitment
    if complaint.dealer != dealer:
        raise ValueError("the complaint is about another dealer")  # caller's bug
    try:
        for message in (dealt, commitment):
            check_round(config, message)
        verify_client_signature(config, commitment)
    except (CryptoError, ProtocolError):
        return Verdict.FALSE_COMPLAINT
    committed_to = merkle.verify_inclusion(
        dealt.signed_payload(),
        complaint.index,
        complaint.size,
        split_proof(complaint.proof),
        commitment.dealt_root,
    )
    if not committed_to or dealt.recipient != holder:
        return Verdict.FALSE_COMPLAINT  # not a share the dealer dealt this holder
    try:
        private = config.suite.agreement_private_key(complaint.key)
        claimed = advertised_key(config, graph, holder_advert, dealer)
    except (CryptoError, RemoteProtocolError):
        return Verdict.FALSE_COMPLAINT
    if private.public_key() != claimed:
        return Verdict.FALSE_COMPLAINT  # not the key the holder signed for this pair
    try:
        committed = check_commitments(
            config.sharing,
            mask_key_polynomial=commitment.mask_key_polynomial,
            self_seed_polynomial=commitment.self_seed_polynomial,
            threshold=graph.threshold(dealer),
            mask_key=dealer_advert.mask_key,
        )
        dealer_key = advertised_key(config, graph, dealer_advert, holder)
        aead = channel_key(config, own=(holder, private), peer=(dealer, dealer_key), outgoing=False)
        mask_share, seed_share = open_dealt(config, aead, dealt)
        check_held_share(committed, holder=holder, mask_share=mask_share, seed_share=seed_share)
    except (CryptoError, RemoteProtocolError):
        return Verdict.DEALER_AT_FAULT
    return Verdict.FALSE_COMPLAINT
