"""The tree hash of large vectors: its layout is pinned, independent of the parallel split."""

from __future__ import annotations

import hashlib

from securefed.crypto.hashing import TREE_CHUNK_BYTES, tree_sha256


def test_tree_hash_layout_and_chunking() -> None:
    data = bytes(range(256)) * (3 * TREE_CHUNK_BYTES // 256 + 7)
    leaves = [
        hashlib.sha256(data[i : i + TREE_CHUNK_BYTES]).digest()
        for i in range(0, len(data), TREE_CHUNK_BYTES)
    ]
    expected = hashlib.sha256(
        b"securefed/v1/tree-sha256" + len(data).to_bytes(8, "big") + b"".join(leaves)
    ).digest()
    assert tree_sha256(data) == expected
    assert (
        tree_sha256(b"")
        == hashlib.sha256(
            b"securefed/v1/tree-sha256" + bytes(8) + hashlib.sha256(b"").digest()
        ).digest()
    )
    assert tree_sha256(data[:-1]) != tree_sha256(data)
