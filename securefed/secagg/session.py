"""Session setup: a secret sketch seed shared by the clients, never by the server
(docs/fedamp.md, "Session setup").

The attention weights come from sketches (:mod:`securefed.personalize.sketch`) computed with a seed
the server must not know. At session start:

1. every client sends a session-level key-agreement key, signed by its identity key
   (:class:`~securefed.secagg.messages.SessionKey`); the server broadcasts them all, signed;
2. the *dealer* -- the lowest roster index in that directory -- draws a 32-byte seed, commits to it
   (SHA-256 over label, session and seed, signed), and seals it for every other client under a
   directional key (``KeyPurpose.SKETCH_SEED``, from the session keys);
3. the server delivers each client its sealed seed with the commitment; the client opens it and
   checks it against the commitment.

A dealer that offers no usable seed is left out and the setup is dealt again (issue 20: no one
client can stop the run at its start). The server drops the dealer's key
(:meth:`SessionSetupServer.leave_out`) and sends the smaller directory; the next lowest index
deals. A client accepts a directory dealt again only before its seed arrived, and only if it is
the earlier one less at least that dealer (same keys, a higher lowest index): the server gains
no new choice -- it chose the directory, hence the dealer, already -- and each client goes through
at most one directory per dealer. What the server can tell on its own: a dealer that stays
silent (or sends nothing verifiable) -- a dropout, not proof of anything; and a *signed* offer
that fails the public checks (:attr:`SessionSetupServer.rejected`: it does not seal the seed for
exactly every other client in the directory, a sealed seed is not ``SEALED_BYTES`` long, or its
commitment is not validly signed by the dealer for this session) -- proof, on the dealer's own
signature. A sealed seed that does not open for its recipient, or opens to a seed other than the
committed one, is *not* provable without that recipient's session private key; its recipient
fails its setup and gets no seed (module docstring of :mod:`securefed.secagg.dealing` for how
the round protocol makes such claims checkable).

Every client then holds the same seed and the same commitment, which it binds into every round's
transcript (:func:`commitment_context`): a client that got another seed or commitment signs another
transcript and the round aborts before anything is unmasked. The server relays only ciphertexts.

Trust: the dealer is an ordinary client; a colluding dealer gives the server the seed -- but
"server + any one client" knows it anyway, since every client does (threat_model/README.md).
Both objects are pure, like the round protocol: messages in, messages out. Problems raise the
usual typed protocol errors; a client that raised is FAILED for good and holds no seed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from enum import Enum

from securefed.crypto import (
    Aead,
    AgreementPrivateKey,
    AgreementPublicKey,
    KdfContext,
    KeyPurpose,
    SigningKey,
    derive_channel_key,
)
from securefed.crypto.aead import OVERHEAD_BYTES
from securefed.errors import ConfigError, CryptoError, LocalProtocolError, RemoteProtocolError
from securefed.secagg.messages import (
    Message,
    SealedShare,
    SessionKey,
    SessionKeyDirectory,
    SketchSeedCommitment,
    SketchSeedDelivery,
    SketchSeedOffer,
    sign_message,
)
from securefed.secagg.roster import Roster
from securefed.secagg.transcript import ContextItem
from securefed.secagg.verify import verify_message
from securefed.secagg.wire import Writer

__all__ = [
    "COMMITMENT_LABEL",
    "SEALED_BYTES",
    "SessionSetupClient",
    "SessionSetupServer",
    "commitment_context",
    "seed_commitment",
]

SETUP_ROUND = 0  # session-level messages and keys use round 0 of the session
COMMITMENT_LABEL = "securefed/sketch-seed-commitment"
SEED_BYTES = 32
#: The length of every sealed seed in a dealer's offer (nonce, seed, tag).
SEALED_BYTES = SEED_BYTES + OVERHEAD_BYTES


class SetupStage(Enum):
    IDLE = "idle"
    KEYS = "keys"
    SEED = "seed"
    DONE = "done"
    FAILED = "failed"


def seed_commitment(session_id: bytes, seed: bytes) -> bytes:
    """SHA-256 over a label, the session id and the seed."""
    w = Writer().blob(b"securefed/v1/sketch-seed-commitment").fixed(session_id, 32)
    return hashlib.sha256(w.fixed(seed, SEED_BYTES).getvalue()).digest()


def commitment_context(commitment: bytes) -> ContextItem:
    """The transcript item that binds the session's sketch seed into every round."""
    return ContextItem(COMMITMENT_LABEL, commitment)


def _seal_ad(session_id: bytes, sender: int, recipient: int) -> bytes:
    w = Writer().blob(b"securefed/v1/sketch-seed").fixed(session_id, 32)
    return w.u32(sender).u32(recipient).getvalue()


class SessionSetupClient:
    """One client's side of the sketch-seed setup. Single use: one key, at most one seed; the
    directory may come again, smaller, until the seed arrives (a setup dealt again)."""

    def __init__(
        self,
        roster: Roster,
        *,
        session_id: bytes,
        index: int,
        identity: SigningKey,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        """Raises ConfigError if ``index``/``identity`` do not match the roster."""
        if not roster.is_member(index) or identity.verify_key() != roster.client(index).identity:
            raise ConfigError("index and identity key must match a roster entry")
        KdfContext(session_id, SETUP_ROUND)
        self.roster, self.session_id, self.index = roster, session_id, index
        self._identity, self._random_bytes = identity, random_bytes
        self._key: AgreementPrivateKey | None = None
        self._directory: dict[int, AgreementPublicKey] = {}
        self._dealer: int | None = None
        self._stage = SetupStage.IDLE
        self.sketch_seed: bytes | None = None
        self.commitment: bytes | None = None

    @property
    def stage(self) -> SetupStage:
        return self._stage

    @property
    def members(self) -> tuple[int, ...]:
        """The roster indices whose session keys the accepted directory holds (who shares the
        seed); empty before a directory was accepted."""
        return tuple(sorted(self._directory))

    def start(self) -> SessionKey:
        if self._stage is not SetupStage.IDLE:
            raise LocalProtocolError("session setup already started")
        self._key = self.roster.suite.generate_agreement_key()
        self._stage = SetupStage.KEYS
        return sign_message(
            SessionKey,
            self._identity,
            self.session_id,
            SETUP_ROUND,
            sender=self.index,
            agreement_key=self._key.public_key().to_bytes(),
        )

    def receive(self, message: Message) -> list[Message]:
        """Process a server message. Raises RemoteProtocolError (and fails for good) on anything
        forged, inconsistent or out of order."""
        try:
            if isinstance(message, SessionKeyDirectory) and self._stage in (
                SetupStage.KEYS,
                SetupStage.SEED,
            ):
                return self._on_directory(message)
            if isinstance(message, SketchSeedDelivery) and self._stage is SetupStage.SEED:
                self._on_delivery(message)
                return []
            raise RemoteProtocolError(f"{type(message).__name__} is not expected now")
        except (CryptoError, RemoteProtocolError) as exc:
            self._stage = SetupStage.FAILED
            self.sketch_seed = None
            raise RemoteProtocolError(f"session setup failed: {exc}") from exc

    def _on_directory(self, directory: SessionKeyDirectory) -> list[Message]:
        verify_message(self.roster, directory, session_id=self.session_id, round_=SETUP_ROUND)
        for key in directory.keys:
            verify_message(self.roster, key, session_id=self.session_id, round_=SETUP_ROUND)
        keys = {
            k.sender: self.roster.suite.agreement_public_key(k.agreement_key)
            for k in directory.keys
        }
        assert self._key is not None  # noqa: S101 - set in start()
        if keys.get(self.index) != self._key.public_key():
            raise RemoteProtocolError("the directory does not hold this client's session key")
        if self._stage is SetupStage.SEED:
            self._check_dealt_again(keys)
        self._directory, self._dealer = keys, min(keys)
        self._stage = SetupStage.SEED
        if self.index != self._dealer:
            return []
        return [self._offer()]

    def _check_dealt_again(self, keys: dict[int, AgreementPublicKey]) -> None:
        """A directory dealt again is the earlier one less (at least) its dealer: the same key
        for every client it keeps, and a higher lowest index (so, a new dealer)."""
        assert self._dealer is not None  # noqa: S101 - set with the first directory
        if min(keys) <= self._dealer:
            raise RemoteProtocolError("a directory dealt again must leave its last dealer out")
        if any(self._directory.get(sender) != key for sender, key in keys.items()):
            raise RemoteProtocolError("a directory dealt again may only leave session keys out")

    def _offer(self) -> SketchSeedOffer:
        """The dealer draws the seed, commits to it and seals it for every other client."""
        assert self._key is not None  # noqa: S101
        seed = self._random_bytes(SEED_BYTES)
        commitment = sign_message(
            SketchSeedCommitment,
            self._identity,
            self.session_id,
            SETUP_ROUND,
            sender=self.index,
            commitment=seed_commitment(self.session_id, seed),
        )
        sealed = []
        for peer, public in sorted(self._directory.items()):
            if peer == self.index:
                continue
            aead = self._aead(sender=self.index, recipient=peer, peer_public=public)
            ad = _seal_ad(self.session_id, self.index, peer)
            sealed.append(SealedShare(peer, aead.seal(seed, associated_data=ad)))
        self.sketch_seed, self.commitment = seed, commitment.commitment
        self._stage = SetupStage.DONE
        return sign_message(
            SketchSeedOffer,
            self._identity,
            self.session_id,
            SETUP_ROUND,
            commitment=commitment,
            sealed=tuple(sealed),
        )

    def _aead(self, *, sender: int, recipient: int, peer_public: AgreementPublicKey) -> Aead:
        """The AEAD of the sketch-seed channel ``sender -> recipient`` (this client is one end)."""
        assert self._key is not None  # noqa: S101 - set in start()
        peer = recipient if sender == self.index else sender
        key = derive_channel_key(
            self._key.exchange(peer_public),
            purpose=KeyPurpose.SKETCH_SEED,
            context=KdfContext(self.session_id, SETUP_ROUND),
            own=(self.index, self._key.public_key()),
            peer=(peer, peer_public),
            outgoing=sender == self.index,
        )
        return Aead(key)

    def _on_delivery(self, delivery: SketchSeedDelivery) -> None:
        verify_message(self.roster, delivery, session_id=self.session_id, round_=SETUP_ROUND)
        commitment = delivery.commitment
        verify_message(self.roster, commitment, session_id=self.session_id, round_=SETUP_ROUND)
        dealer = self._dealer
        assert dealer is not None  # noqa: S101 - set with the directory
        if delivery.recipient != self.index or commitment.sender != dealer:
            raise RemoteProtocolError("the seed is not from the dealer or not for this client")
        if delivery.sealed.peer != dealer:
            raise RemoteProtocolError("the sealed seed names another sender")
        aead = self._aead(sender=dealer, recipient=self.index, peer_public=self._directory[dealer])
        ad = _seal_ad(self.session_id, dealer, self.index)
        seed = aead.open(delivery.sealed.ciphertext, associated_data=ad)
        if (
            len(seed) != SEED_BYTES
            or seed_commitment(self.session_id, seed) != commitment.commitment
        ):
            raise RemoteProtocolError("the sketch seed does not match the dealer's commitment")
        self.sketch_seed, self.commitment = seed, commitment.commitment
        self._stage = SetupStage.DONE


class SessionSetupServer:
    """The server's side: it relays keys and sealed seeds and learns no seed."""

    def __init__(self, roster: Roster, *, session_id: bytes, identity: SigningKey) -> None:
        if identity.verify_key() != roster.server.identity:
            raise ConfigError("identity key does not match the roster's server entry")
        self.roster, self.session_id, self._identity = roster, session_id, identity
        self._keys: dict[int, SessionKey] = {}
        self._left_out: set[int] = set()
        self._offer: SketchSeedOffer | None = None
        self.commitment: bytes | None = None
        #: Why the dealer's signed offer failed the public checks (proof against the dealer, on
        #: its own signature), or None: no such offer came.
        self.rejected: str | None = None

    @property
    def dealer(self) -> int | None:
        """The client that deals now: the lowest index with a session key (None if none)."""
        return min(self._keys, default=None)

    @property
    def clients(self) -> tuple[int, ...]:
        """The clients in the directory, in order."""
        return tuple(sorted(self._keys))

    @property
    def offered(self) -> bool:
        """Whether the dealer's offer came and passed the public checks."""
        return self._offer is not None

    def receive(self, message: Message) -> None:
        """Collect a client message; a bad one is dropped (RemoteProtocolError for the caller
        to log), never fatal to the setup. A signed offer of the dealer's that fails the public
        checks also sets :attr:`rejected`."""
        verify_message(self.roster, message, session_id=self.session_id, round_=SETUP_ROUND)
        if isinstance(message, SessionKey) and message.sender not in self._keys:
            if message.sender in self._left_out:
                raise RemoteProtocolError("a session key of a client left out of the setup")
            try:
                self.roster.suite.agreement_public_key(message.agreement_key)
            except CryptoError as exc:  # every client would fail on the directory
                raise RemoteProtocolError(f"the session key does not load: {exc}") from None
            self._keys[message.sender] = message
        elif isinstance(message, SketchSeedOffer) and self._offer is None:
            if message.sender != self.dealer:
                raise RemoteProtocolError("only the dealer may offer the sketch seed")
            problem = self._offer_problem(message)
            if problem:
                self.rejected = problem
                raise RemoteProtocolError(f"the dealer's signed offer is bad: {problem}")
            self._offer = message
        else:
            raise RemoteProtocolError(f"unexpected or duplicate {type(message).__name__}")

    def _offer_problem(self, offer: SketchSeedOffer) -> str:
        """What in the dealer's (validly signed) offer fails the public checks, or ''."""
        try:
            verify_message(
                self.roster, offer.commitment, session_id=self.session_id, round_=SETUP_ROUND
            )
        except RemoteProtocolError as exc:
            return f"its commitment: {exc}"
        others = tuple(i for i in sorted(self._keys) if i != offer.sender)
        if tuple(s.peer for s in offer.sealed) != others:
            return "it does not seal the seed for exactly every other client in the directory"
        if any(len(s.ciphertext) != SEALED_BYTES for s in offer.sealed):
            return f"a sealed seed is not {SEALED_BYTES} bytes long"
        return ""

    def leave_out(self) -> int:
        """Leave out the dealer, which offered no usable seed: its key leaves the directory (and
        may not come back) and the next lowest index deals. Returns the dealer's index.

        Raises:
            LocalProtocolError: the dealer's offer came already, or there is no dealer.
        """
        dealer = self.dealer
        if self._offer is not None or dealer is None:
            raise LocalProtocolError("no dealer to leave out: the seed was offered, or no keys")
        del self._keys[dealer]
        self._left_out.add(dealer)
        self.rejected = None
        return dealer

    def directory(self) -> SessionKeyDirectory:
        """The signed directory of all session keys received."""
        keys = tuple(self._keys[i] for i in sorted(self._keys))
        return sign_message(
            SessionKeyDirectory, self._identity, self.session_id, SETUP_ROUND, keys=keys
        )

    def deliveries(self) -> list[tuple[int, SketchSeedDelivery]]:
        """(recipient, delivery) for every client the dealer sealed the seed for."""
        if self._offer is None:
            raise LocalProtocolError("no sketch-seed offer from the dealer yet")
        self.commitment = self._offer.commitment.commitment
        out = []
        for sealed in self._offer.sealed:
            delivery = sign_message(
                SketchSeedDelivery,
                self._identity,
                self.session_id,
                SETUP_ROUND,
                recipient=sealed.peer,
                commitment=self._offer.commitment,
                sealed=SealedShare(self._offer.sender, sealed.ciphertext),
            )
            out.append((sealed.peer, delivery))
        return out
