"""AEAD: own nonces, mandatory associated data, one error for every failure (DESIGN R3)."""

from __future__ import annotations

import pytest

from securefed.crypto import Aead, KdfContext, KeyPurpose, derive_directional_key, get_suite
from securefed.crypto.aead import NONCE_BYTES, OVERHEAD_BYTES
from securefed.errors import ConfigError, DecryptionError

SUITE = get_suite("default")
CONTEXT = KdfContext(bytes(32), 0)
AD = b"share|0->1|session|round 0"


def _pair() -> tuple[Aead, Aead]:
    """The sender's and the recipient's view of the 0 -> 1 share-encryption key."""
    alice, bob = SUITE.generate_agreement_key(), SUITE.generate_agreement_key()
    direction = {
        "purpose": KeyPurpose.SHARE,
        "context": CONTEXT,
        "sender": 0,
        "recipient": 1,
        "sender_public": alice.public_key(),
        "recipient_public": bob.public_key(),
    }
    sender_side = derive_directional_key(alice.exchange(bob.public_key()), **direction)
    recipient_side = derive_directional_key(bob.exchange(alice.public_key()), **direction)
    return Aead(sender_side), Aead(recipient_side)


def test_round_trip_between_parties() -> None:
    sender, recipient = _pair()
    sealed = sender.seal(b"a share", associated_data=AD)
    assert len(sealed) == len(b"a share") + OVERHEAD_BYTES
    assert recipient.open(sealed, associated_data=AD) == b"a share"


def test_fresh_nonce_every_message() -> None:
    sender, _ = _pair()
    nonces = {sender.seal(b"same", associated_data=AD)[:NONCE_BYTES] for _ in range(200)}
    assert len(nonces) == 200


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 1]) + data[index + 1 :]


@pytest.mark.parametrize("index", [0, NONCE_BYTES, -1], ids=["nonce", "ciphertext", "tag"])
def test_tampering_raises_one_error(index: int) -> None:
    sender, recipient = _pair()
    sealed = sender.seal(b"a share", associated_data=AD)
    with pytest.raises(DecryptionError, match=r"^decryption failed$"):
        recipient.open(_flip(sealed, index), associated_data=AD)


def test_wrong_associated_data_wrong_key_and_truncation_raise_the_same_error() -> None:
    sender, recipient = _pair()
    _, stranger = _pair()
    sealed = sender.seal(b"a share", associated_data=AD)
    failures = [
        lambda: recipient.open(sealed, associated_data=AD + b"!"),
        lambda: stranger.open(sealed, associated_data=AD),
        lambda: recipient.open(sealed[: OVERHEAD_BYTES - 1], associated_data=AD),
        lambda: recipient.open(b"", associated_data=AD),
    ]
    messages = set()
    for failure in failures:
        with pytest.raises(DecryptionError) as info:
            failure()
        messages.add(str(info.value))
    assert messages == {"decryption failed"}


def test_associated_data_is_mandatory() -> None:
    sender, _ = _pair()
    with pytest.raises(ConfigError, match="associated data"):
        sender.seal(b"x", associated_data=b"")
    with pytest.raises(ConfigError):
        sender.seal("text", associated_data=AD)  # type: ignore[arg-type]


@pytest.mark.parametrize("length", [0, 16, 31, 33])
def test_suite_rejects_wrong_key_lengths(length: int) -> None:
    with pytest.raises(ConfigError):
        SUITE.aead(bytes(length))
    with pytest.raises(ConfigError):
        SUITE.keystream(bytes(length))
