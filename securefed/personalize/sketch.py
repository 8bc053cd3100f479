"""Secret sketches for the FedAMP attention weights (DESIGN §4a).

The server needs the pairwise squared distances (FedAMP) or cosines (HeurFedAMP) of the clients'
models ``w_i`` in R^d, but must not see the models. The clients share a 32-byte sketch seed the
server never learns; each sends a k-dimensional sketch and the server estimates the distance or
cosine matrix from the N sketches alone (:func:`squared_distances_from_sketches`,
:func:`cosines_from_sketches`, :func:`centred_cosines_from_sketches`; no seed needed).

Round ``r``'s sketch matrix is ``S_r = Q_r·S_0``:

* ``S_0`` (k x d, fixed for the session): by default a sparse sign matrix
  (:attr:`SketchConstruction.SPARSE_SIGN`): the k rows form ``s`` blocks of ``k/s`` rows, and
  every column has exactly one entry ``±1/sqrt(s)`` in each block (a hashed row, a random sign),
  so each column has norm exactly 1 and ``E[S_0ᵀS_0] = I``. Applying it costs O(s·d) (``s``
  bincounts); it is generated once, at construction (session setup). A dense Gaussian ``S_0``
  (:attr:`SketchConstruction.GAUSSIAN`, entries N(0, 1/k)) is available for small models: it costs
  O(k·d) keystream and Gaussian transforms per application (seconds at d = 10^6).
* ``Q_r`` (k x k): a Haar-random orthogonal matrix, fresh every round, as a product of k - 1
  random Householder reflections and a random sign diagonal (Stewart 1980; the same law as the
  sign-corrected QR of a Gaussian matrix, Mezzadri 2007), applied in O(k²) without forming it.
  Distance and cosine sketches use two independent rotations.
* Distance sketches add a secret offset common to all clients of the round,
  ``η_r ~ N(0, offset_scale²·(d/k)·I_k)``: ``distance_sketch(w) = S_r·w + η_r``, which is
  ``S_r·(w + rho_r)`` for the offset ``rho_r = S_r⁺·η_r`` (whenever ``S_r`` has rank k).
  Differences, hence distances, are unchanged; norms are drowned (``E‖η_r‖² = offset_scale²·d``).

Key schedule. Every stream is an AES-CTR keystream (:class:`~securefed.crypto.KeyStream`) under
``derive_stream_key(suite, seed, purpose=KeyPurpose.SKETCH, context=KdfContext(session_id, round),
target=tag)``, with ``session_id`` the protocol's session id (or, when none is given, the suite's
digest of ``"securefed/v1/sketch-session" || 0 || seed``) and

===========================  ==================  =====
stream                       context round       tag
===========================  ==================  =====
``S_0`` (round-independent)  0                   0
``Q_r`` for distances        r                   1
``η_r``                      r                   2
``Q'_r`` for cosines         r                   3
===========================  ==================  =====

so no two streams share a key. Gaussians come from the keystream by Box-Muller on 53-bit uniforms
(``u = (word64 >> 11 + 1/2)·2^-53``, never 0 or 1); sparse rows by multiply-shift of 31-bit words
(each bucket's probability within a relative ``(k/s)·2^-31`` of uniform), signs from the low bit.
Nothing here uses ``random`` or ``numpy.random``.

What the sketches leak is stated in ``docs/fedamp.md`` ("Secret sketches for the attention
weights"). In one sentence: the server's view of a round is exactly equivalent to the Gram matrix of
the round's offset sketches (Q_r is Haar and unknown to it), i.e. the sketched distances plus a
Gaussian-noised view of the mean model's norm; a colluding client (who knows the seed) learns the
same k fixed linear functionals ``S_0·w_i`` of every model every round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import cast

import numpy as np
import numpy.typing as npt

from securefed.crypto import CipherSuite, KdfContext, KeyPurpose, KeyStream, derive_stream_key
from securefed.errors import ConfigError

__all__ = [
    "DEFAULT_NONZEROS_PER_COLUMN",
    "DEFAULT_OFFSET_SCALE",
    "DEFAULT_SKETCH_DIM",
    "MAX_SKETCH_DIM",
    "SketchConfig",
    "SketchConstruction",
    "SketchKind",
    "Sketcher",
    "centred_cosines_from_sketches",
    "cosines_from_sketches",
    "squared_distances_from_sketches",
    "standard_normals",
]

FloatArray = npt.NDArray[np.float64]

DEFAULT_SKETCH_DIM = 256
DEFAULT_NONZEROS_PER_COLUMN = 4
DEFAULT_OFFSET_SCALE = 1e5
MAX_SKETCH_DIM = 4096  # Q_r is a dense k x k matrix: 128 MiB at the cap
MAX_OFFSET_SCALE = 1e8  # beyond this, float64 rounding of the offset swamps small distances
SEED_BYTES = 32
BASE_MATRIX_MAX_ENTRIES = 1 << 24  # base_matrix() is for tests and small models (128 MiB)
_SESSION_LABEL = b"securefed/v1/sketch-session\x00"
_GAUSSIAN_BLOCK_ENTRIES = 1 << 18  # S_0 entries generated per block by the GAUSSIAN construction
_TWO_POW_MINUS_53 = 2.0**-53


class SketchConstruction(Enum):
    """The family of the fixed secret matrix ``S_0``."""

    SPARSE_SIGN = "sparse-sign"  # s entries ±1/sqrt(s) per column, one per row block: O(s·d)
    GAUSSIAN = "gaussian"  # i.i.d. N(0, 1/k) entries, regenerated per application: O(k·d)


class SketchKind(Enum):
    """Which rotation a sketch uses: distance and cosine sketches never share a ``Q_r``."""

    DISTANCE = "distance"
    COSINE = "cosine"


class _Stream(IntEnum):
    """The ``target`` binding of each SKETCH stream (see the key schedule in the module doc)."""

    BASE = 0
    DISTANCE_ROTATION = 1
    OFFSET = 2
    COSINE_ROTATION = 3


_ROTATION_STREAM = {
    SketchKind.DISTANCE: _Stream.DISTANCE_ROTATION,
    SketchKind.COSINE: _Stream.COSINE_ROTATION,
}


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be an int in [{low}, {high}]")
    return value


@dataclass(frozen=True, slots=True)
class SketchConfig:
    """Sketch parameters (the same for every client of a session; part of the transcript).

    Attributes:
        dim: k, the sketch length (1..4096). Relative error of a squared distance ~ sqrt(2/k).
        construction: the family of ``S_0``.
        nonzeros_per_column: s, for ``SPARSE_SIGN`` only (must divide ``dim``); ignored by
            ``GAUSSIAN``. More nonzeros give lighter tails for vectors with a few dominant
            coordinates, at O(s·d) cost; the variance does not depend on s.
        offset_scale: per-coordinate scale of the secret common offset of distance sketches
            (``E‖η_r‖² = offset_scale²·d``); choose it far above the models' per-coordinate RMS.
    """

    dim: int = DEFAULT_SKETCH_DIM
    construction: SketchConstruction = SketchConstruction.SPARSE_SIGN
    nonzeros_per_column: int = DEFAULT_NONZEROS_PER_COLUMN
    offset_scale: float = DEFAULT_OFFSET_SCALE

    def __post_init__(self) -> None:
        _check_int("dim", self.dim, 1, MAX_SKETCH_DIM)
        if not isinstance(self.construction, SketchConstruction):
            raise ConfigError("construction must be a SketchConstruction")
        _check_int("nonzeros_per_column", self.nonzeros_per_column, 1, self.dim)
        if (
            self.construction is SketchConstruction.SPARSE_SIGN
            and self.dim % self.nonzeros_per_column
        ):
            raise ConfigError("nonzeros_per_column must divide dim")
        scale = self.offset_scale
        if isinstance(scale, bool) or not isinstance(scale, int | float):
            raise ConfigError("offset_scale must be a number")
        if not (math.isfinite(scale) and 0 < scale <= MAX_OFFSET_SCALE):
            raise ConfigError(f"offset_scale must be in (0, {MAX_OFFSET_SCALE:g}]")


def standard_normals(stream: KeyStream, count: int) -> FloatArray:
    """The next ``count`` standard normals of ``stream`` (Box-Muller; one 64-bit word each)."""
    pairs = (count + 1) // 2
    words = cast(npt.NDArray[np.uint64], stream.words(2 * pairs, np.uint64))
    uniform = ((words >> 11).astype(np.float64) + 0.5) * _TWO_POW_MINUS_53
    radius = np.sqrt(-2.0 * np.log(uniform[0::2]))
    angle = (2.0 * math.pi) * uniform[1::2]
    out = np.empty(2 * pairs, dtype=np.float64)
    out[0::2] = radius * np.cos(angle)
    out[1::2] = radius * np.sin(angle)
    return out[:count]


def _sparse_index(
    stream: KeyStream, *, rows_per_block: int, blocks: int, model_dim: int
) -> npt.NDArray[np.int32]:
    """``index[b, j] = 2·row + sign_bit`` of column j's entry in block b (row within the block)."""
    index = np.empty((blocks, model_dim), dtype=np.int32)
    raw = np.empty(model_dim, dtype=np.uint32)
    for block in range(blocks):
        stream.fill(raw)
        rows = ((raw >> 1).astype(np.uint64) * np.uint64(rows_per_block)) >> np.uint64(31)
        index[block] = (2 * rows + (raw & 1)).astype(np.int32)
    return index


def _read_only(array: FloatArray) -> FloatArray:
    array.setflags(write=False)
    return array


class _HaarRotation:
    """A Haar-random k x k orthogonal matrix in factored form (Stewart 1980):
    ``Q = H_0·H_1···H_{k-2}·D``.

    ``H_j`` is the Householder reflection of coordinates ``j..k-1`` that maps an independent
    standard normal vector ``x_j`` (length ``k - j``) to ``-sign(x_j[0])·‖x_j‖·e_0``, and
    ``D = diag(-sign(x_0[0]), ..., -sign(x_{k-2}[0]), sign(z))`` with one more normal ``z``. This
    is exactly the Q factor, normalised to a positive diagonal of R, of the Householder QR of a
    k x k Gaussian matrix (whose successive reduced columns are independent standard normal
    vectors), hence Haar-distributed (Mezzadri 2007) -- at O(k²) Gaussians and flops to apply
    instead of the O(k³) of forming Q.
    """

    __slots__ = ("_betas", "_dim", "_signs", "_vectors")

    def __init__(
        self, dim: int, vectors: list[FloatArray], betas: FloatArray, signs: FloatArray
    ) -> None:
        self._dim = dim
        self._vectors = vectors
        self._betas = betas
        self._signs = signs

    @classmethod
    def from_stream(cls, stream: KeyStream, dim: int) -> _HaarRotation:
        normals = standard_normals(stream, dim * (dim + 1) // 2)
        vectors: list[FloatArray] = []
        betas = np.empty(max(dim - 1, 0), dtype=np.float64)
        signs = np.empty(dim, dtype=np.float64)
        start = 0
        for j in range(dim - 1):
            x = normals[start : start + dim - j].copy()
            start += dim - j
            sign = 1.0 if x[0] >= 0.0 else -1.0
            x[0] += sign * float(np.linalg.norm(x))  # u = x + sign(x_0)·‖x‖·e_0
            vectors.append(x)
            betas[j] = 2.0 / float(x @ x)
            signs[j] = -sign
        signs[dim - 1] = 1.0 if normals[start] >= 0.0 else -1.0
        return cls(dim, vectors, betas, signs)

    def apply(self, x: FloatArray) -> FloatArray:
        """``Q·x`` for a (k,) vector or a (k, m) matrix (a new array)."""
        out = x * (self._signs if x.ndim == 1 else self._signs[:, None])
        for j in range(self._dim - 2, -1, -1):
            u, tail = self._vectors[j], out[j:]
            tail -= np.multiply.outer(u, self._betas[j] * (u @ tail))
        return out

    def matrix(self) -> FloatArray:
        return self.apply(np.eye(self._dim))


class Sketcher:
    """Client-side sketching under one secret sketch seed (hold it like a key).

    Same seed, session and config give the same ``S_0`` and, per round, the same ``Q_r`` and
    ``η_r`` on every client. ``S_0`` does not depend on the round; ``Q_r`` and ``η_r`` are fresh
    every round. Not thread-safe (a small per-round cache of the rotations).
    """

    __slots__ = (
        "_base_index",
        "_config",
        "_model_dim",
        "_rotations",
        "_seed",
        "_session_id",
        "_suite",
    )

    def __init__(
        self,
        suite: CipherSuite,
        seed: bytes,
        config: SketchConfig,
        *,
        model_dim: int,
        session_id: bytes | None = None,
    ) -> None:
        """Derive ``S_0`` (for ``SPARSE_SIGN``: generate and keep its s·d indices, 4 bytes each).

        Args:
            suite: the session's cipher suite (KDF and stream cipher).
            seed: the secret 32-byte sketch seed shared by the clients.
            config: sketch parameters.
            model_dim: d, the length of every model vector.
            session_id: the protocol's 32-byte session id, to bind the streams to the session;
                by default a digest of the seed (a fresh seed per session is then required).

        Raises:
            ConfigError: wrong seed or session id length, bad config or model_dim.
        """
        if not isinstance(suite, CipherSuite):
            raise ConfigError("suite must be a CipherSuite")
        if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
            raise ConfigError(f"the sketch seed is exactly {SEED_BYTES} bytes")
        if not isinstance(config, SketchConfig):
            raise ConfigError("config must be a SketchConfig")
        self._model_dim = _check_int("model_dim", model_dim, 1, 2**40)
        if session_id is None:
            session_id = suite.digest(_SESSION_LABEL + seed)
        KdfContext(session_id=session_id, round=0)  # validates the session id
        self._suite = suite
        self._seed = seed
        self._config = config
        self._session_id = session_id
        self._rotations: dict[SketchKind, tuple[int, _HaarRotation]] = {}
        self._base_index: npt.NDArray[np.int32] | None = None
        if config.construction is SketchConstruction.SPARSE_SIGN:
            blocks = config.nonzeros_per_column
            self._base_index = _sparse_index(
                self._stream(_Stream.BASE, 0),
                rows_per_block=config.dim // blocks,
                blocks=blocks,
                model_dim=model_dim,
            )

    def __repr__(self) -> str:
        return (
            f"<Sketcher k={self._config.dim} d={self._model_dim} {self._config.construction.value}>"
        )

    @property
    def config(self) -> SketchConfig:
        return self._config

    @property
    def model_dim(self) -> int:
        return self._model_dim

    # --- the fixed matrix S_0 ---------------------------------------------------------------
    def base_apply(self, w: npt.ArrayLike) -> FloatArray:
        """``S_0·w`` (round-independent; what a holder of the seed can read off any sketch)."""
        vector = self._check_model(w, "w")
        if self._base_index is None:
            return self._gaussian_apply(vector)
        return self._sparse_apply(vector, self._base_index)

    def base_matrix(self) -> FloatArray:
        """``S_0`` as a dense k x d matrix (tests, attack analyses; at most 2**24 entries).

        Raises:
            ConfigError: the matrix would exceed 2**24 entries.
        """
        k, d = self._config.dim, self._model_dim
        if k * d > BASE_MATRIX_MAX_ENTRIES:
            raise ConfigError("base_matrix is limited to 2**24 entries")
        if self._base_index is None:
            return standard_normals(self._stream(_Stream.BASE, 0), k * d).reshape(
                d, k
            ).T / math.sqrt(k)
        blocks = self._base_index.shape[0]
        rows_per_block = k // blocks
        matrix = np.zeros((k, d), dtype=np.float64)
        columns = np.arange(d)
        for block, codes in enumerate(self._base_index):
            signs = np.where(codes & 1, -1.0, 1.0) / math.sqrt(blocks)
            matrix[block * rows_per_block + (codes >> 1), columns] = signs
        return matrix

    def _sparse_apply(self, w: FloatArray, index: npt.NDArray[np.int32]) -> FloatArray:
        blocks = index.shape[0]
        rows_per_block = self._config.dim // blocks
        out = np.empty(self._config.dim, dtype=np.float64)
        for block, codes in enumerate(index):
            counts = np.bincount(codes, weights=w, minlength=2 * rows_per_block)
            out[block * rows_per_block : (block + 1) * rows_per_block] = counts[0::2] - counts[1::2]
        out *= 1.0 / math.sqrt(blocks)
        return out

    def _gaussian_apply(self, w: FloatArray) -> FloatArray:
        k = self._config.dim
        stream = self._stream(_Stream.BASE, 0)
        columns = max(2, (_GAUSSIAN_BLOCK_ENTRIES // k) & ~1)  # even: blocks stay pair-aligned
        out = np.zeros(k, dtype=np.float64)
        for start in range(0, self._model_dim, columns):
            stop = min(self._model_dim, start + columns)
            block = standard_normals(stream, (stop - start) * k).reshape(stop - start, k)
            out += w[start:stop] @ block
        out *= 1.0 / math.sqrt(k)
        return out

    # --- per-round randomness ---------------------------------------------------------------
    def rotation(self, round_: int, *, kind: SketchKind = SketchKind.DISTANCE) -> FloatArray:
        """``Q_r`` as a dense, read-only k x k matrix (orthogonal, Haar-distributed).

        For inspection and tests: sketching applies ``Q_r`` in its factored form, O(k²), and
        never forms it (forming it is O(k³)).
        """
        return _read_only(self._rotation(round_, kind).matrix())

    def _rotation(self, round_: int, kind: SketchKind) -> _HaarRotation:
        if not isinstance(kind, SketchKind):
            raise ConfigError("kind must be a SketchKind")
        cached = self._rotations.get(kind)
        if cached is not None and cached[0] == round_:
            return cached[1]
        rotation = _HaarRotation.from_stream(
            self._stream(_ROTATION_STREAM[kind], round_), self._config.dim
        )
        self._rotations[kind] = (round_, rotation)
        return rotation

    def offset(self, round_: int) -> FloatArray:
        """``η_r``, the secret offset common to all distance sketches of round ``round_``."""
        k = self._config.dim
        scale = self._config.offset_scale * math.sqrt(self._model_dim / k)
        return _read_only(scale * standard_normals(self._stream(_Stream.OFFSET, round_), k))

    # --- sketches ---------------------------------------------------------------------------
    def round_matrix_apply(
        self, w: npt.ArrayLike, *, round_: int, kind: SketchKind = SketchKind.DISTANCE
    ) -> FloatArray:
        """``S_r·w = Q_r·S_0·w`` (no offset, no normalisation)."""
        return self._rotation(round_, kind).apply(self.base_apply(w))

    def distance_sketch(self, w: npt.ArrayLike, *, round_: int) -> FloatArray:
        """``S_r·w + η_r``: what a client sends for distance-based weights (FedAMP).

        ``‖distance_sketch(a) - distance_sketch(b)‖²`` estimates ``‖a - b‖²`` (unbiased over the
        seed); the sketch's own norm is dominated by the offset.
        """
        sketch = self.round_matrix_apply(w, round_=round_, kind=SketchKind.DISTANCE)
        sketch += self.offset(round_)
        return sketch

    def cosine_sketch(
        self, w: npt.ArrayLike, *, mean: npt.ArrayLike | None, round_: int
    ) -> FloatArray:
        """``Q'_r·S_0·(w - mean)/‖w - mean‖`` for cosine-based weights (HeurFedAMP).

        ``mean`` is a centring reference every client knows (a public reference model such as the
        session's initial model or the previous round's public aggregate); ``None`` sketches the
        raw direction (raw-weight cosines are ~0.999 for every pair in practice). To centre at
        the across-client mean, which no client knows, send :meth:`distance_sketch` instead and
        let the server use :func:`centred_cosines_from_sketches`.

        Raises:
            ConfigError: ``w`` equals ``mean`` (no direction), bad shape or non-finite values.
        """
        vector = self._check_model(w, "w")
        if mean is not None:
            vector = vector - self._check_model(mean, "mean")
        norm = float(np.linalg.norm(vector))
        if not norm > 0.0:
            raise ConfigError("the model equals the centring reference: no direction to sketch")
        return self.round_matrix_apply(vector / norm, round_=round_, kind=SketchKind.COSINE)

    # --- helpers ----------------------------------------------------------------------------
    def _stream(self, tag: _Stream, round_: int) -> KeyStream:
        context = KdfContext(session_id=self._session_id, round=round_)
        key = derive_stream_key(
            self._suite, self._seed, purpose=KeyPurpose.SKETCH, context=context, target=int(tag)
        )
        return KeyStream(key, parallel=False)

    def _check_model(self, w: npt.ArrayLike, name: str) -> FloatArray:
        vector = np.asarray(w, dtype=np.float64)
        if vector.shape != (self._model_dim,):
            raise ConfigError(f"{name} must have shape ({self._model_dim},), got {vector.shape}")
        if not np.isfinite(vector).all():
            raise ConfigError(f"{name} has non-finite values")
        return vector


# --- server side: estimators from the sketches alone ---------------------------------------------
def _check_sketches(sketches: npt.ArrayLike, *, min_rows: int) -> FloatArray:
    array = np.asarray(sketches, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < min_rows or array.shape[1] < 1:
        raise ConfigError(f"sketches must be an (N, k) array with N >= {min_rows}")
    if not np.isfinite(array).all():
        raise ConfigError("sketches have non-finite values")
    return array


def squared_distances_from_sketches(sketches: npt.ArrayLike) -> FloatArray:
    """Estimated ``‖w_i - w_j‖²`` (N x N) from one round's distance sketches (rows).

    Computed from differences (the common offset cancels exactly), never from the Gram matrix
    (which would cancel catastrophically against the offset). Exactly symmetric, zero diagonal.

    Raises:
        ConfigError: not a finite (N, k) array.
    """
    rows = _check_sketches(sketches, min_rows=1)
    out = np.empty((rows.shape[0], rows.shape[0]), dtype=np.float64)
    for i, row in enumerate(rows):
        diff = rows - row
        out[i] = np.einsum("ij,ij->i", diff, diff)
    return out


def cosines_from_sketches(sketches: npt.ArrayLike) -> FloatArray:
    """Estimated cosines (N x N) from one round's cosine sketches (rows, as sent).

    The estimate is the cosine of the sketches themselves (each renormalised), in [-1, 1],
    symmetric, with unit diagonal.

    Raises:
        ConfigError: not a finite (N, k) array, or a zero row.
    """
    rows = _check_sketches(sketches, min_rows=1)
    norms = np.linalg.norm(rows, axis=1)
    if not (norms > 0.0).all():
        raise ConfigError("a sketch is zero: its cosine is undefined")
    unit = rows / norms[:, None]
    gram = unit @ unit.T
    out = cast(FloatArray, np.clip(0.5 * (gram + gram.T), -1.0, 1.0))
    np.fill_diagonal(out, 1.0)
    return out


def centred_cosines_from_sketches(sketches: npt.ArrayLike) -> FloatArray:
    """Estimated cosines of ``w_i - mean_j w_j`` (the across-client mean of the N sketching
    clients) from one round's DISTANCE sketches.

    Sketching is linear, so ``y_i - mean(y) = S_r·(w_i - w̄)`` exactly: the common offset cancels
    and no client needs to know the mean. (These cosines are a function of the pairwise distances
    alone: they reveal nothing the distances do not.)

    Raises:
        ConfigError: fewer than 2 sketches, non-finite values, or a model exactly at the mean.
    """
    rows = _check_sketches(sketches, min_rows=2)
    return cosines_from_sketches(rows - rows.mean(axis=0))
