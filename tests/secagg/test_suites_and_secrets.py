"""R6 and R9 in the protocol: secrets across the whole 256-bit range, both cipher suites."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from securefed.crypto import get_suite, shamir, vss
from securefed.secagg import ShareRejected, Stage
from securefed.secagg.messages import Message, RevealedShare, UnmaskResponse
from securefed.testing import resign, run_round
from tests.secagg.conftest import config_for, federation, inputs_for


@pytest.mark.parametrize("suite", ["default", "fips-p256"])
def test_round_with_each_cipher_suite(suite: str) -> None:
    fed = federation(5, suite)
    outcome = run_round(config_for(fed), fed, inputs_for(5), dropouts={2: Stage.MASK})
    assert outcome.result is not None
    expected = sum(inputs_for(5)[i] for i in outcome.result.contributors)
    assert np.max(np.abs(outcome.result.values - expected)) <= outcome.result.error_bound


@pytest.mark.parametrize("suite", ["default", "fips-p256"])
def test_raw_private_keys_survive_sharing(suite: str) -> None:
    """Raw X25519 private bytes exceed 2**255 about half of the time; P-256 scalars are < n."""
    cipher_suite = get_suite(suite)
    for _ in range(40):
        key = cipher_suite.generate_agreement_key()
        raw = key.secret_bytes_for_sharing()
        shares = shamir.split(raw, threshold=3, holders=range(5))
        rebuilt = cipher_suite.agreement_private_key(shamir.combine(shares[2:], threshold=3))
        assert rebuilt.public_key() == key.public_key()


def test_boundary_secrets() -> None:
    for secret in (bytes(32), b"\xff" * 32, b"\x80" + bytes(31), (2**255 - 19).to_bytes(32, "big")):
        assert (
            shamir.combine(shamir.split(secret, threshold=4, holders=range(7))[3:], threshold=4)
            == secret
        )


def test_reconstructed_mask_key_is_checked_against_the_signed_public_key() -> None:
    """Client 3 (malicious) reveals a wrong share of dropped client 6's mask key."""
    fed = federation(7)

    def hook(sender: int, message: Message) -> Sequence[Message]:
        if sender == 3 and isinstance(message, UnmaskResponse):
            tampered = []
            for item in message.mask_key_shares:
                share = vss.Share.from_bytes(item.share)
                bad = vss.Share(share.x, (share.y + 5) % vss.ORDER)
                tampered.append(RevealedShare(item.owner, bad.to_bytes()))
            return (resign(message, fed.client_keys[3], mask_key_shares=tuple(tampered)),)
        return (message,)

    outcome = run_round(
        config_for(fed), fed, inputs_for(7), dropouts={6: Stage.MASK}, client_hook=hook
    )
    flagged = [e for e in outcome.server_events if isinstance(e, ShareRejected)]
    assert [(e.owner, e.holders) for e in flagged] == [(6, (3,))]
    assert outcome.result is not None
    expected = sum(inputs_for(7)[i] for i in range(6))
    assert np.max(np.abs(outcome.result.values - expected)) <= outcome.result.error_bound
