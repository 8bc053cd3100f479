"""A low-dimensional, per-record bounded summary of a client's data for similarity under DP.

Learned similarities between DP-trained models collapse at the data sizes of a credit
consortium: the DP noise in the model differences swamps the group signal (docs/results.md).
This module gives each client a summary of its data that a *separate, small* Gaussian release
can carry (:meth:`securefed.dp.PrivateTrainer.release_statistic` adds the noise and charges the
accountant): the **label-conditional input projection**

    s = sum over records (x, y) of  e_y (x) P x / ||P x||,

one block of ``dim`` values per class. ``P`` is a fixed ``features x dim`` Gaussian matrix that is
the same for every client and needs no secrecy: it is derived from a public label
(:data:`DEFAULT_PROJECTION_LABEL`) through the crypto layer's AES-CTR stream, so every
institution computes it independently and it carries no information about anybody's data.

Guarantees. Every record contributes one row of :func:`label_projection_contributions`, which
depends on that record alone and has L2 norm exactly 1 (0 for an all-zero input): the sum has
L2 sensitivity 1 under adding or removing a record, which is what the release assumes (it clips
rows to norm 1 again, so a caller's mistake cannot raise the sensitivity). Two clients whose
labels mean the same thing have blocks that point the same way; under concept shift (the same
input, another label) or different class mixes (dominant classes), the blocks differ -- the
server clusters the released statistics (through the secret sketches) to choose group mode's
partition. Measured in docs/results.md.

Failure modes: :class:`~securefed.errors.ConfigError` for labels outside ``[0, num_classes)``,
non-finite inputs, mismatched lengths or a bad ``dim``.
"""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from securefed.crypto import KdfContext, KeyPurpose, KeyStream, derive_stream_key, get_suite
from securefed.errors import ConfigError
from securefed.personalize.sketch import standard_normals

__all__ = [
    "DEFAULT_PROJECTION_LABEL",
    "MAX_STATISTIC_DIM",
    "label_projection_contributions",
    "projection_matrix",
]

FloatArray = npt.NDArray[np.float64]

#: The public label from which every client derives the same projection matrix P.
DEFAULT_PROJECTION_LABEL = b"securefed/label-conditional-projection/v1"
#: Largest accepted projection size per class.
MAX_STATISTIC_DIM = 1024


def projection_matrix(
    features: int, dim: int, *, label: bytes = DEFAULT_PROJECTION_LABEL
) -> FloatArray:
    """The public ``features x dim`` matrix P with i.i.d. N(0, 1/dim) entries, a pure function of
    ``(features, dim, label)`` (AES-CTR keystream under a key derived from ``label``; Box-Muller).
    Read-only and cached."""
    for name, value, high in (("features", features, 1 << 24), ("dim", dim, MAX_STATISTIC_DIM)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise ConfigError(f"{name} must be an integer in [1, {high}], got {value!r}")
    if not isinstance(label, bytes) or not label:
        raise ConfigError("label must be non-empty bytes")
    return _projection(features, dim, label)


@lru_cache(maxsize=8)
def _projection(features: int, dim: int, label: bytes) -> FloatArray:
    seed = hashlib.sha256(label).digest()
    context = KdfContext(session_id=seed, round=0)
    key = derive_stream_key(
        get_suite("default"), seed, purpose=KeyPurpose.SKETCH, context=context, target=dim
    )
    normals = standard_normals(KeyStream(key, parallel=False), features * dim)
    matrix = normals.reshape(features, dim) / math.sqrt(dim)
    matrix.setflags(write=False)
    return matrix


def label_projection_contributions(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    num_classes: int,
    dim: int = 8,
    label: bytes = DEFAULT_PROJECTION_LABEL,
) -> FloatArray:
    """One row per record: ``P x / ||P x||`` placed in the block of its label (``num_classes x
    dim`` columns), every row of L2 norm 1 (0 for an input that projects to zero).

    ``x`` has shape ``(n, ...)`` (flattened per record), ``y`` shape ``(n,)`` with integer labels
    in ``[0, num_classes)``. Their sum is the statistic; see the module docstring.
    """
    records = np.asarray(x, dtype=np.float64)
    labels = np.asarray(y)
    if records.ndim < 1 or labels.shape != (records.shape[0],):
        raise ConfigError(
            f"need one label per record, got inputs {records.shape} and labels {labels.shape}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ConfigError(
            f"labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}"
        )
    flat = records.reshape(records.shape[0], -1)
    if not np.isfinite(flat).all():
        raise ConfigError("inputs hold NaN or infinite values")
    projected = flat @ projection_matrix(flat.shape[1], dim, label=label)
    norms = np.linalg.norm(projected, axis=1, keepdims=True)
    unit = np.divide(projected, norms, out=np.zeros_like(projected), where=norms > 0)
    rows = np.zeros((flat.shape[0], num_classes * dim), dtype=np.float64)
    columns = labels.astype(np.int64)[:, None] * dim + np.arange(dim)[None, :]
    np.put_along_axis(rows, columns, unit, axis=1)
    return rows
