"""Merkle trees as RFC 6962 (section 2.1) defines them: one signature over many messages, each
of which can be checked alone with a short inclusion proof.

A dealer signs the root over the shares it dealt to all its holders; each holder gets its own
share and a path of ``ceil(log2 n)`` sibling hashes, and checks that its share is in the signed
tree (docs/protocol.md, "Who signs what"). The hashing is RFC 6962's, so its published test
vectors apply: a leaf hashes as ``SHA-256(0x00 || data)``, an inner node as
``SHA-256(0x01 || left || right)``, a tree of ``n > 1`` leaves splits at the largest power of two
below ``n``, and the empty tree's root is ``SHA-256("")``.

Guarantees: under SHA-256's collision resistance, no one can produce two different leaf lists
with one root, nor an inclusion proof for data that is not a leaf of the tree. The leaf and node
prefixes keep a leaf from passing as an inner node (second preimages). The root does **not** fix
the tree's size, so it does not fix a leaf's position either: as in RFC 9162, which assumes the
verifier knows the size from a signed tree head, a proof can also verify at another (index,
size) pair of the same root (leaf 2 of 3 verifies as leaf 1 of 2). A caller that needs the
position must know the size from elsewhere; securefed's dealt root binds what was dealt, and
each leaf names its dealer and recipient itself.

Failure modes: :func:`inclusion_proof` raises ConfigError for an index outside the tree;
:func:`verify_inclusion` returns False for any proof that does not check (never raises on
malformed input of the right types).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from securefed.errors import ConfigError

__all__ = [
    "HASH_BYTES",
    "inclusion_proof",
    "inclusion_proofs",
    "leaf_hash",
    "root",
    "verify_inclusion",
]

HASH_BYTES = 32
_LEAF = b"\x00"
_NODE = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``: the hash of one leaf."""
    return hashlib.sha256(_LEAF + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


def _levels(hashes: Sequence[bytes]) -> list[list[bytes]]:
    """The tree bottom-up: ``levels[0]`` the leaf hashes, the last level the root alone.

    Pairing left to right and carrying an odd last node up unchanged builds the same tree as
    RFC 6962's recursive split (whose left subtree is always the complete one)."""
    levels = [list(hashes)]
    while len(levels[-1]) > 1:
        level = levels[-1]
        paired = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        levels.append(paired)
    return levels


def root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle tree hash of ``leaves`` (the data, not their hashes)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    return _levels([leaf_hash(leaf) for leaf in leaves])[-1][0]


def inclusion_proofs(leaves: Sequence[bytes]) -> tuple[bytes, tuple[tuple[bytes, ...], ...]]:
    """The root of ``leaves`` and the audit path of every leaf (RFC 6962 section 2.1.1: sibling
    hashes, the leaf's first), computed from one pass over the tree (``2n`` hashes in all). The
    empty tree gives its root, ``SHA-256("")``, and no paths."""
    if not leaves:
        return root(leaves), ()
    levels = _levels([leaf_hash(leaf) for leaf in leaves])
    proofs = []
    for index in range(len(leaves)):
        path, position = [], index
        for level in levels[:-1]:
            sibling = position ^ 1
            if sibling < len(level):  # else the node is carried up: no sibling at this level
                path.append(level[sibling])
            position >>= 1
        proofs.append(tuple(path))
    return levels[-1][0], tuple(proofs)


def inclusion_proof(leaves: Sequence[bytes], index: int) -> tuple[bytes, ...]:
    """The audit path of leaf ``index`` alone (see :func:`inclusion_proofs`).

    Raises:
        ConfigError: ``index`` is not in ``[0, len(leaves))``.
    """
    if not 0 <= index < len(leaves):
        raise ConfigError(f"leaf index {index} is outside a tree of {len(leaves)} leaves")
    return inclusion_proofs(leaves)[1][index]


def verify_inclusion(
    data: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes
) -> bool:
    """Whether ``data`` is leaf ``index`` of the tree of ``size`` leaves whose root is
    ``expected_root``, by the audit path ``proof`` (RFC 9162 section 2.1.3.2's algorithm). True
    proves that ``data`` is a leaf of that root; the position only if ``size`` is trusted
    (module docstring).

    Returns False, never raises, for a wrong index or size, a proof of the wrong length or with
    hashes of the wrong length, or any mismatch.
    """
    if not 0 <= index < size or any(len(h) != HASH_BYTES for h in proof):
        return False
    fn, sn = index, size - 1
    result = leaf_hash(data)
    for sibling in proof:
        if sn == 0:
            return False  # the proof is longer than the path
        if fn & 1 or fn == sn:
            result = _node(sibling, result)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            result = _node(result, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and result == expected_root
