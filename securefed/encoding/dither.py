"""The randomness of stochastic rounding, and nothing else (DESIGN R4, R7).

A :class:`DitherStream` can only be built from a :class:`~securefed.crypto.kdf.DerivedKey` whose
purpose is :attr:`~securefed.crypto.kdf.KeyPurpose.DITHER`. The codec accepts nothing else, so
mask bytes (``MASK``, ``SELF``, ``TARGET``) can never be spent as rounding randomness: a mask key
is refused here, and a plain :class:`~securefed.crypto.prg.KeyStream` (which does not remember its
purpose) is refused by the codec's type check.

The stream is forward-only: every call consumes fresh keystream, so two encodings through the same
stream never share rounding randomness. Reproducibility comes from the seed: the same
``(suite, seed, context, target)`` always yields the same uniforms. Production callers pass a fresh
``os.urandom(32)`` seed per party; tests pass fixed seeds.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from securefed.crypto.kdf import DerivedKey, KdfContext, KeyPurpose, derive_stream_key
from securefed.crypto.prg import KeyStream
from securefed.crypto.suites import CipherSuite
from securefed.errors import ConfigError

__all__ = ["UNIFORM_BITS", "DitherStream", "dither_stream"]

# Uniforms are 32-bit keystream words w read as w * 2**-32: exactly uniform on that grid in
# [0, 1). Rounding up when w < frac * 2**32 happens with probability ceil(frac * 2**32) / 2**32,
# so the rounding bias is below 2**-32 of an ulp -- far below every other error in the system --
# and the dither costs 4 keystream bytes per value (half of a 53-bit float's 8).
UNIFORM_BITS = 32
_UNIT = 2.0**-UNIFORM_BITS


class DitherStream:
    """A keystream under a DITHER key, read as float64 uniforms in ``[0, 1)``.

    Not thread-safe; one object per stream, like :class:`~securefed.crypto.prg.KeyStream`.
    """

    __slots__ = ("_stream",)

    def __init__(self, key: DerivedKey, *, start: int = 0) -> None:
        """Open the dither stream of ``key`` at uniform number ``start`` (4 bytes each).

        Raises:
            ConfigError: ``key`` is not a :class:`DerivedKey` with purpose ``KeyPurpose.DITHER``
                (e.g. a mask key: mask bytes must never double as rounding randomness).
        """
        if not isinstance(key, DerivedKey) or key.purpose is not KeyPurpose.DITHER:
            raise ConfigError("a DitherStream needs a DerivedKey with purpose KeyPurpose.DITHER")
        self._stream = KeyStream(key, start=4 * start)

    @property
    def position(self) -> int:
        """Number of keystream bytes consumed so far (4 per uniform)."""
        return self._stream.position

    def uniforms(self, count: int) -> npt.NDArray[np.float64]:
        """The next ``count`` uniforms: ``word * 2**-32`` for little-endian uint32 words.

        Every output lies in ``[0, 1)`` and is an exact multiple of ``2**-32``.

        Raises:
            ConfigError: ``count`` is negative or not an int.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ConfigError("count must be an int >= 0")
        words = np.empty(count, dtype=np.uint32)
        self.fill_words(words)
        uniforms: npt.NDArray[np.float64] = words.astype(np.float64) * _UNIT
        return uniforms

    def fill_words(self, out: npt.NDArray[np.uint32]) -> None:
        """Overwrite ``out`` with the next ``out.size`` raw words (uniform = word * 2**-32).

        The codec compares them with ``frac * 2**32`` directly instead of converting them.
        """
        self._stream.fill(out)


def dither_stream(
    suite: CipherSuite,
    seed: bytes,
    *,
    context: KdfContext,
    target: int | None = None,
) -> DitherStream:
    """The dither stream of ``seed`` for one ``(session, round, target)``.

    The key is ``derive_stream_key(suite, seed, purpose=KeyPurpose.DITHER, ...)``: HKDF with the
    ``securefed/v1/dither`` label, so it is independent of every mask stream derived from the same
    seed and context. Use a fresh ``os.urandom(32)`` seed in production.

    Raises:
        ConfigError: ``seed`` shorter than 32 bytes, or an invalid ``target``.
    """
    key = derive_stream_key(suite, seed, purpose=KeyPurpose.DITHER, context=context, target=target)
    return DitherStream(key)
