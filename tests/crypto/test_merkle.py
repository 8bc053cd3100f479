"""securefed.crypto.merkle against RFC 6962's published test vectors (the Certificate
Transparency reference leaves, roots and inclusion proofs, as transparency-dev/merkle's
testonly/constants.go publishes them), and properties over every small tree."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securefed.crypto import merkle
from securefed.errors import ConfigError

LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [  # the root of the first n leaves, n = 0..8
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
INCLUSION = {  # (index, size): audit path
    (0, 8): (
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ),
    (5, 8): (
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ),
}


@pytest.mark.parametrize("size", range(len(ROOTS)))
def test_roots_match_rfc6962(size: int) -> None:
    assert merkle.root(LEAVES[:size]).hex() == ROOTS[size]


@pytest.mark.parametrize(("index", "size"), sorted(INCLUSION))
def test_inclusion_proofs_match_rfc6962(index: int, size: int) -> None:
    proof = merkle.inclusion_proof(LEAVES[:size], index)
    assert tuple(h.hex() for h in proof) == INCLUSION[(index, size)]
    root = bytes.fromhex(ROOTS[size])
    assert merkle.verify_inclusion(LEAVES[index], index, size, proof, root)


def test_every_proof_of_every_small_tree_verifies_and_nothing_else_does() -> None:
    leaves = [bytes([i, 7 * i % 256]) for i in range(37)]
    for size in range(1, len(leaves) + 1):
        tree = leaves[:size]
        root, proofs = merkle.inclusion_proofs(tree)
        assert root == merkle.root(tree)
        for index, proof in enumerate(proofs):
            assert proof == merkle.inclusion_proof(tree, index)
            assert merkle.verify_inclusion(tree[index], index, size, proof, root)
            other = (index + 1) % size
            if other != index:
                assert not merkle.verify_inclusion(tree[index], other, size, proof, root)
                assert not merkle.verify_inclusion(tree[other], index, size, proof, root)
            assert not merkle.verify_inclusion(tree[index], index, index, proof, root)
            assert not merkle.verify_inclusion(tree[index], index, size, (*proof, root), root)
            if proof:
                assert not merkle.verify_inclusion(tree[index], index, size, proof[:-1], root)
                flipped = bytes([proof[0][0] ^ 1]) + proof[0][1:]
                assert not merkle.verify_inclusion(
                    tree[index], index, size, (flipped, *proof[1:]), root
                )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(max_size=8), min_size=1, max_size=20),
    st.integers(0, 40),
    st.integers(0, 40),
    st.lists(st.binary(min_size=0, max_size=40), max_size=8),
)
def test_verify_never_raises_and_accepts_only_real_leaves(
    leaves: list[bytes], index: int, size: int, proof: list[bytes]
) -> None:
    root = merkle.root(leaves)
    verdict = merkle.verify_inclusion(b"not-a-leaf-" + bytes(9), index, size, proof, root)
    assert verdict is False


def test_index_outside_the_tree_is_refused() -> None:
    with pytest.raises(ConfigError):
        merkle.inclusion_proof(LEAVES[:3], 3)
    with pytest.raises(ConfigError):
        merkle.inclusion_proof([], 0)


def test_the_empty_tree_has_its_root_and_no_paths() -> None:
    assert merkle.inclusion_proofs([]) == (bytes.fromhex(ROOTS[0]), ())


def test_a_leaf_cannot_pass_as_an_inner_node() -> None:
    """Second-preimage resistance: the concatenation of two leaf hashes, as one leaf, does not
    give the two-leaf tree's root (the 0x00 / 0x01 prefixes differ)."""
    a, b = merkle.leaf_hash(b"a"), merkle.leaf_hash(b"b")
    assert merkle.root([a + b]) != merkle.root([b"a", b"b"])
