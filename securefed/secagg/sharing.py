"""How a client shares its two round secrets, and how they come back: one interface, two schemes.

Every client deals its **mask key** (the private key behind its advertised mask key; needed if it
drops after masking) and its **self-mask seed** (needed if it survives) t-of-m among its holders.

``FELDMAN`` (the default; :mod:`securefed.crypto.vss`): the dealer commits to both sharing
polynomials over P-256 and signs the commitments. Everyone can check in public that the mask-key
polynomial shares the advertised mask key (its constant term *is* that public key, so mask keys are
P-256 keys in every cipher suite) and that both polynomials have the dealer's threshold; each
holder checks its own shares on receipt; the server checks every revealed share and names the
holder of a bad one. Reconstruction interpolates the first ``t`` valid shares: no subset search,
and one malicious client cannot stop the round (docs/protocol.md, "Verifiable shares").

``SHAMIR`` (plain :mod:`securefed.crypto.shamir`, a hash commitment to the seed only): the
semi-honest baseline, kept for ``securefed bench secagg`` (the cost of verifiability, measured in
one run) and as the weaker variant that ``threat_model/attacks/test_bad_shares.py`` breaks. A
bad share is found only when the reconstructed secret fails its check, without knowing whose it
was, and the round aborts. The runtime never configures it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from securefed.crypto import shamir, vss
from securefed.errors import CryptoError, InvalidShare

__all__ = [
    "Committed",
    "Dealing",
    "Reconstructed",
    "ShareScheme",
    "check_commitments",
    "check_held_share",
    "deal",
    "draw_self_seed",
    "failing_held_shares",
    "reconstruct",
    "share_bytes",
]


class ShareScheme(Enum):
    """How round secrets are shared (pinned in the round config and its digest)."""

    FELDMAN = "feldman-p256"
    SHAMIR = "shamir"

    @property
    def verifiable(self) -> bool:
        return self is ShareScheme.FELDMAN


def share_bytes(scheme: ShareScheme) -> int:
    """Length of one encoded share under ``scheme``."""
    return vss.SHARE_BYTES if scheme.verifiable else shamir.SHARE_BYTES


@dataclass(frozen=True, slots=True)
class Dealing:
    """One dealer's output: the public polynomials (empty under SHAMIR) and each holder's two
    encoded shares ``(mask-key share, self-seed share)``, keyed by roster index (secret)."""

    mask_key_polynomial: bytes
    self_seed_polynomial: bytes
    shares: dict[int, tuple[bytes, bytes]] = field(repr=False)


def draw_self_seed(scheme: ShareScheme, random_bytes: Callable[[int], bytes] = os.urandom) -> bytes:
    """A fresh 32-byte self-mask seed. Under FELDMAN it is drawn below the P-256 group order
    (rejection sampling; a redraw happens with probability below 2^-32), so that its polynomial
    commits with carry 0 like the mask key's, and both polynomials pass the same public checks.
    """
    while True:
        seed = random_bytes(32)
        value = int.from_bytes(seed, "big")
        if not scheme.verifiable or 0 < value < vss.ORDER:
            return seed


def deal(
    scheme: ShareScheme,
    *,
    mask_key: bytes,
    self_seed: bytes,
    threshold: int,
    holders: Sequence[int],
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> Dealing:
    """Share ``mask_key`` (32-byte private scalar) and ``self_seed`` t-of-``holders``.

    Raises:
        ConfigError: secrets of the wrong length (or, under FELDMAN, 0 modulo the group order),
            a bad threshold or holder set.
    """
    if not scheme.verifiable:
        masks = shamir.split(mask_key, threshold=threshold, holders=holders)
        seeds = shamir.split(self_seed, threshold=threshold, holders=holders)
        shares = {m.holder: (m.to_bytes(), s.to_bytes()) for m, s in zip(masks, seeds, strict=True)}
        return Dealing(b"", b"", shares)
    mask_poly, mask_shares = vss.deal(
        mask_key, threshold=threshold, holders=holders, random_bytes=random_bytes
    )
    seed_poly, seed_shares = vss.deal(
        self_seed, threshold=threshold, holders=holders, random_bytes=random_bytes
    )
    shares = {h: (mask_shares[h].to_bytes(), seed_shares[h].to_bytes()) for h in holders}
    return Dealing(mask_poly.to_bytes(), seed_poly.to_bytes(), shares)


@dataclass(frozen=True, slots=True)
class Committed:
    """A dealer's commitments after :func:`check_commitments` (both None under SHAMIR)."""

    mask_key: vss.Commitment | None
    self_seed: vss.Commitment | None


def check_commitments(
    scheme: ShareScheme,
    *,
    mask_key_polynomial: bytes,
    self_seed_polynomial: bytes,
    threshold: int,
    mask_key: bytes,
) -> Committed:
    """The public checks of a dealer's commitments: anyone can run them on the signed message.

    Under FELDMAN both polynomials must decode, have degree ``threshold - 1`` and carry 0 (the
    secrets are below the group order: :func:`draw_self_seed`; a carry of 1 would make the
    rebuilt value exceed 32 bytes), and the mask-key polynomial's constant term must be
    ``mask_key`` (the advertised 65-byte P-256 point). Under SHAMIR both must be empty. Returns
    them decoded, for :func:`check_held_share`.

    Raises:
        InvalidCommitment: any check fails (always the dealer's fault).
    """
    if not scheme.verifiable:
        if mask_key_polynomial or self_seed_polynomial:
            raise vss.InvalidCommitment("plain Shamir sharing publishes no polynomials")
        return Committed(None, None)
    mask_poly = vss.Commitment.from_bytes(mask_key_polynomial)
    seed_poly = vss.Commitment.from_bytes(self_seed_polynomial)
    if mask_poly.threshold != threshold or seed_poly.threshold != threshold:
        raise vss.InvalidCommitment(
            f"the dealer committed to polynomials for threshold {mask_poly.threshold} and "
            f"{seed_poly.threshold}; its threshold is {threshold}"
        )
    if mask_poly.carry != 0 or seed_poly.carry != 0:
        raise vss.InvalidCommitment("a committed secret is not below the group order (carry 1)")
    if mask_poly.constant_term() != mask_key:
        raise vss.InvalidCommitment("the mask-key polynomial does not share the advertised key")
    return Committed(mask_poly, seed_poly)


def check_held_share(
    committed: Committed, *, holder: int, mask_share: bytes, seed_share: bytes
) -> None:
    """A holder's check of the two shares it received, against the dealer's checked
    commitments. Without commitments (SHAMIR) only the encoding and the holder are checked
    (nothing else can be).

    Raises:
        InvalidShare: a share is malformed, for another holder, or off its committed polynomial.
    """
    if committed.mask_key is None or committed.self_seed is None:
        for data in (mask_share, seed_share):
            if shamir.Share.from_bytes(data).holder != holder:
                raise InvalidShare("the share belongs to another holder")
        return
    pairs = ((committed.mask_key, mask_share), (committed.self_seed, seed_share))
    for commitment, data in pairs:
        vss.verify_share(commitment, vss.Share.from_bytes(data), holder=holder)


def failing_held_shares(
    held: Sequence[tuple[Committed, bytes, bytes]], *, holder: int
) -> frozenset[int]:
    """The indices of the entries of ``held`` -- (a dealer's checked commitments, the mask-key
    share and the self-seed share it sent this holder) -- that :func:`check_held_share` would
    refuse: the same verdict for each dealer, computed for all of them at once under FELDMAN
    (:func:`securefed.crypto.vss.verify_held_shares`, exact, no random batching). Raises nothing.
    """
    failing: set[int] = set()
    items: list[tuple[vss.Commitment, vss.Share]] = []
    owners: list[int] = []
    for index, (committed, mask_share, seed_share) in enumerate(held):
        if committed.mask_key is None or committed.self_seed is None:
            try:
                check_held_share(
                    committed, holder=holder, mask_share=mask_share, seed_share=seed_share
                )
            except CryptoError:
                failing.add(index)
            continue
        try:
            shares = (vss.Share.from_bytes(mask_share), vss.Share.from_bytes(seed_share))
        except CryptoError:
            failing.add(index)
            continue
        items += [(committed.mask_key, shares[0]), (committed.self_seed, shares[1])]
        owners += [index, index]
    failing.update(owners[i] for i in vss.verify_held_shares(items, holder=holder))
    return frozenset(failing)


@dataclass(frozen=True, slots=True)
class Reconstructed:
    """A reconstructed secret and the holders whose revealed shares were discarded as bad."""

    secret: bytes = field(repr=False)
    rejected: tuple[int, ...]


def reconstruct(
    scheme: ShareScheme,
    *,
    polynomial: bytes,
    shares: Mapping[int, bytes],
    threshold: int,
    accept: Callable[[bytes], bool],
) -> Reconstructed:
    """Rebuild one secret from the shares holders revealed (``holder -> encoded share``).

    FELDMAN: every share is checked against ``polynomial``; bad or malformed ones are discarded
    and their holders named; the first ``threshold`` valid ones give the committed secret.
    ``accept`` is not consulted: the polynomial is the commitment (the self seed's separate hash
    commitment, kept for the SHAMIR baseline, binds nothing here, so a dealer cannot make a
    reconstruction that its polynomial allows fail by hashing another seed), and the mask key's
    match with its advertised key was a public check. SHAMIR: the first ``threshold``
    well-formed shares are combined and the result must pass ``accept``; a holder that lied
    cannot be told apart, and the reconstruction fails. Neither searches subsets.

    Raises:
        InvalidShare: too few valid shares (FELDMAN: ``vss.NotEnoughValidShares`` naming the
            rejected holders), or (SHAMIR) a result that fails ``accept``.
    """
    if scheme.verifiable:
        parsed: dict[int, vss.Share | None] = {}
        for holder, data in shares.items():
            try:
                parsed[holder] = vss.Share.from_bytes(data)
            except CryptoError:
                parsed[holder] = None
        malformed = tuple(h for h, s in parsed.items() if s is None)
        valid = {h: s for h, s in parsed.items() if s is not None}
        try:
            result = vss.reconstruct(
                vss.Commitment.from_bytes(polynomial), valid, threshold=threshold
            )
        except vss.NotEnoughValidShares as exc:
            rejected = tuple(sorted((*malformed, *exc.rejected)))
            raise vss.NotEnoughValidShares(str(exc), rejected) from exc
        return Reconstructed(result.secret, tuple(sorted((*malformed, *result.rejected))))
    well_formed: list[shamir.Share] = []
    for holder in sorted(shares):
        try:
            share = shamir.Share.from_bytes(shares[holder])
        except CryptoError:
            continue
        if share.holder == holder:
            well_formed.append(share)
    secret = shamir.combine(well_formed[:threshold], threshold=threshold)
    if not accept(secret):
        raise InvalidShare(
            "the reconstructed secret fails its check: some holder returned a wrong share, and "
            "plain Shamir sharing cannot tell which"
        )
    return Reconstructed(secret, ())
