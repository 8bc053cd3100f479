"""Exposure across rounds: what earlier attention rounds released, and which outputs this round
must withhold so that no coalition can difference two rounds into one party's model (issue 21,
docs/fedamp.md "Across rounds").

**The attack.** Target c learns ``u_c^r = Σ_u ξ^r_cu·w_u^r`` in round r. Models change slowly, so
``w_u^{r-1} ≈ w_u^r``: a coalition holding c's outputs of two rounds holds (nearly) two
combinations of the *same* vectors, and their difference can isolate one contributor (victim v
absent in round r, or ξ moved weight onto v: ``u_c^{r-1} - u_c^r ≈ ξ_cv·w_v``;
``threat_model/attacks/test_differencing.py`` recovers the victim with relative error 1e-4). Each
round on its own passes the exposure rule (:mod:`securefed.secagg.exposure`); the two together
do not.

**The rule.** Every party keeps a :class:`ReleaseHistory`: for each target, the last row of
coefficients it was released (its row of ξ restricted to itself and that round's surviving
contributors), treated as a combination of the current models. In round r the exposure rule is
applied to the history and this round's rows *together* (``exposure_report`` over the stack
``[history, rows_r]``: a coalition knows both rows of each of its members). A target whose new row
would let a coalition of at most ``n_C`` clients (with the server) read some party below
``min_exposure`` gets **no output this round**: :func:`withheld_targets` picks them greedily and
deterministically from public inputs (ξ, the members U2' the server settled on, the history bound
into the transcript), so every honest contributor and the server compute the same set, the
contributors send no masked input for those targets, and the server could not unmask one even if
it tried. A target whose row did not change adds nothing (its span is already known) and is never
withheld for it. The round's other outputs go ahead.

After masking, dropouts can still shrink the released rows (U3 ⊂ U2'); then every contributor
checks the two rounds together once more (:func:`check_release`) and refuses to sign the
consistency check if the rule fails, as it does for one round (docs/fedamp.md).

**Who keeps the history.** The server sends its history in the key directory (bound into the
transcript, so every survivor signs the same one). A client that took part in the last round
compares it with its own (:func:`check_claimed_history`): the same round must carry the same rows,
and a history older than the client's own, or none when the client has one, is a lying server.
The history is updated once the consistency check closes (the server holds t signatures and can
unmask from then on, whatever it does next): :meth:`ReleaseHistory.after`.

**What it does not cover.** Only the *last* row per target is kept, as the issue that asked for
this specifies: a row two releases old is treated as a combination of older models. A coalition
that keeps every row of every round and bets on the models standing still for many rounds is
outside the rule (docs/fedamp.md, threat_model/residual_risk.md).

This module imports only numpy, :mod:`securefed.errors` and the secagg modules below it.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from securefed.errors import ConfigError, RemoteProtocolError, WeightPolicyViolation
from securefed.secagg.exposure import (
    RANK_TOLERANCE,
    attention_releases,
    coalition_distance,
    exposure_report,
)
from securefed.secagg.policy import (
    RULE_TOLERANCE,
    PolicyRule,
    WeightPolicy,
    decode_weights,
    encode_weights,
)
from securefed.secagg.transcript import ContextItem
from securefed.secagg.wire import Reader, Writer

__all__ = [
    "CHANGE_TOLERANCE",
    "HISTORY_LABEL",
    "ReleaseHistory",
    "check_claimed_history",
    "check_release",
    "history_context",
    "released_rows",
    "withheld_targets",
]

FloatArray = npt.NDArray[np.float64]

HISTORY_LABEL: Final = "securefed/release-history"
# A row whose every coefficient is within this of its last release counts as that release: the
# server's float64 arithmetic moves honest weights by ~1e-14 between rounds, and a difference of
# delta in a coefficient shows in the outputs as delta·w_v, far below the codec's resolution of
# 2^-31 at most (|w_v| <= B <= 2^31·2^-f). The history keeps the earlier row then, so a drift in
# such steps adds up against it and is judged once it exceeds the tolerance.
CHANGE_TOLERANCE: Final = 1e-12
_VERSION: Final = 1
_MAX_ROUND: Final = (1 << 32) - 1


@dataclass(frozen=True, slots=True, eq=False)
class ReleaseHistory:
    """For each of N parties, the last coefficient row it was released in attention mode.

    Attributes:
        round: the last round whose release it includes (its consistency check closed).
        rows: N x N, read-only; ``rows[c]`` is target c's last released row (its ξ entries on
            itself and that round's surviving contributors), all zeros if c never got an output.
    """

    round: int
    rows: FloatArray

    def __post_init__(self) -> None:
        if isinstance(self.round, bool) or not isinstance(self.round, int):
            raise ConfigError("the history's round must be an int")
        if not 0 <= self.round <= _MAX_ROUND:
            raise ConfigError(f"the history's round must be in [0, {_MAX_ROUND}]")
        rows = np.array(self.rows, dtype=np.float64)  # a private copy
        if rows.ndim != 2 or rows.shape[0] != rows.shape[1] or rows.shape[0] < 2:
            raise ConfigError("the history's rows must be an N x N matrix, N >= 2")
        if not np.isfinite(rows).all() or (rows < 0).any():
            raise ConfigError("the history's rows must be finite and non-negative")
        rows += 0.0  # -0.0 -> 0.0: equal histories have equal encodings
        rows.flags.writeable = False
        object.__setattr__(self, "rows", rows)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReleaseHistory):
            return NotImplemented
        return self.to_bytes() == other.to_bytes()

    def __hash__(self) -> int:
        return hash(self.to_bytes())

    @property
    def n_clients(self) -> int:
        return int(self.rows.shape[0])

    @classmethod
    def empty(cls, n_clients: int) -> ReleaseHistory:
        """No output released yet (round 0)."""
        return cls(0, np.zeros((n_clients, n_clients)))

    def after(
        self,
        round_: int,
        weights: npt.ArrayLike,
        *,
        survivors: Sequence[int],
        withheld: Sequence[int] = (),
    ) -> ReleaseHistory:
        """The history once round ``round_`` released each survivor's row except ``withheld``.

        Raises:
            ConfigError: ``round_`` not after :attr:`round`, or shapes and indices that do not
                fit (:func:`released_rows`).
        """
        if isinstance(round_, bool) or not isinstance(round_, int) or round_ <= self.round:
            raise ConfigError(f"round {round_!r} is not after the history's round {self.round}")
        current = released_rows(weights, survivors=survivors, withheld=withheld)
        if current.shape != self.rows.shape:
            raise ConfigError("the weights and the history are for different federations")
        current = _settled(self.rows, current)
        rows = self.rows.copy()
        targets = [t for t in survivors if t not in set(withheld)]
        rows[targets] = current[targets]
        return ReleaseHistory(round_, rows)

    def to_bytes(self) -> bytes:
        """``version (u8) ‖ round (u32) ‖ blob(rows as policy.encode_weights writes them)``."""
        return (
            Writer()
            .u8(_VERSION)
            .u32(self.round)
            .blob(encode_weights(self.rows), limit=_limit(self.n_clients))
            .getvalue()
        )

    @classmethod
    def from_bytes(cls, data: bytes, n_clients: int) -> ReleaseHistory:
        """The inverse of :meth:`to_bytes` for a federation of ``n_clients``.

        Raises:
            RemoteProtocolError: anything but a canonical encoding for ``n_clients`` parties.
        """
        if not isinstance(data, bytes):
            raise RemoteProtocolError("a release history must be bytes")
        try:
            reader = Reader(data)
            version = reader.u8()
            round_ = reader.u32()
            matrix = decode_weights(reader.blob(limit=_limit(n_clients)), n_clients)
            reader.finish()
        except ConfigError as exc:
            raise RemoteProtocolError(f"bad release history: {exc}") from exc
        if version != _VERSION:
            raise RemoteProtocolError(f"release history version {version} is not {_VERSION}")
        history = cls(round_, matrix)
        if history.to_bytes() != data:  # pragma: no cover - decode_weights is canonical
            raise RemoteProtocolError("a release history that is not canonical")
        return history


def _limit(n_clients: int) -> int:
    return 9 + 8 * n_clients * n_clients


def history_context(encoded: bytes) -> ContextItem:
    """The transcript item that binds the history the round was judged against (all survivors
    sign the same one); ``b""`` when the server claims none."""
    return ContextItem(HISTORY_LABEL, encoded)


def released_rows(
    weights: npt.ArrayLike, *, survivors: Sequence[int], withheld: Sequence[int] = ()
) -> FloatArray:
    """The rows a round over ``survivors`` releases: each survivor target's row of ξ restricted
    to itself and the other survivors; zeros for a party that gets no output (absent or
    ``withheld``).

    Raises:
        ConfigError: ``weights`` not a finite N x N matrix, or bad indices.
    """
    members = [operator.index(s) for s in survivors]
    skipped = set(withheld)
    targets = [t for t in members if t not in skipped]
    contributors = {t: [u for u in members if u != t] for t in targets}
    rows = attention_releases(weights, targets=targets, contributors=contributors)
    silent = [i for i in range(rows.shape[0]) if i not in set(targets)]
    rows[silent] = 0.0
    return rows


def _settled(past: FloatArray, rows: FloatArray) -> FloatArray:
    """``rows`` with every row within :data:`CHANGE_TOLERANCE` of its last release replaced by
    that release (exactly)."""
    same = np.abs(rows - past).max(axis=1) <= CHANGE_TOLERANCE
    settled: FloatArray = np.where(same[:, None], past, rows)
    return settled


def _violations(
    stack: FloatArray, policy: WeightPolicy, open_targets: set[int]
) -> tuple[bool, set[int]]:
    """Whether some party is below ``min_exposure`` over the stack, and the open targets whose
    current row (``stack[-1]``) the exposing coalitions need (every open member of such a
    coalition when no single row is needed)."""
    report = exposure_report(stack, collusion_bound=policy.colluders)
    limit = policy.min_exposure * (1 - RULE_TOLERANCE)
    victims = np.flatnonzero(report.values < limit).tolist()
    blamed: set[int] = set()
    for victim in victims:
        coalition = report.coalitions[victim]
        candidates = [c for c in coalition if c in open_targets]
        needed = []
        for c in candidates:
            without = stack.copy()
            without[-1, c] = 0.0
            if coalition_distance(without, coalition, victim) >= limit:
                needed.append(c)
        blamed.update(needed or candidates)
    return bool(victims), blamed


def _alone_exposing(past: FloatArray, rows: FloatArray, policy: WeightPolicy) -> set[int]:
    """The targets whose own two rows (``past[c]``, ``rows[c]``) already expose some other party
    below ``min_exposure``: the coalition {c} is always allowed (``colluders >= 1``), and only
    withholding c's new row fixes it, so every valid withheld set contains them. One batched SVD
    of N matrices N x 2: a cheap first pass before the greedy search over larger coalitions
    (a departure changes every row in one coordinate, and would otherwise cost one exposure
    report per pass)."""
    if policy.colluders == 0:
        return set()
    n = rows.shape[0]
    matrix = np.stack([past, rows], axis=2)  # coalition c, coordinate v, its two rows
    matrix[np.arange(n), np.arange(n), :] = 0.0  # c's own coordinate is known to it
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
    left, singular, _ = np.linalg.svd(matrix, full_matrices=False)
    explained = np.einsum("cvk,ck->cv", left * left, (singular > RANK_TOLERANCE).astype(float))
    explained[np.arange(n), np.arange(n)] = 0.0
    limit = policy.min_exposure * (1 - RULE_TOLERANCE)
    distances = np.sqrt(np.clip(1.0 - explained.max(axis=1), 0.0, 1.0))
    return {int(c) for c in np.flatnonzero(distances < limit)}


def withheld_targets(
    weights: npt.ArrayLike,
    policy: WeightPolicy,
    *,
    members: Sequence[int],
    history: ReleaseHistory | None,
) -> tuple[int, ...]:
    """The targets among ``members`` (U2') whose outputs this round must withhold: the least set,
    found greedily, such that the history and the rows released to the other members (each
    restricted to the members) keep every party at ``min_exposure`` or above against
    ``policy.colluders`` colluding clients. Deterministic in its inputs: the server and every
    contributor compute the same set. ``()`` when the rule is off (``min_exposure = 0``).

    First every target whose own two rows expose someone is withheld (necessary: the coalition
    of that target alone sees it). Then each pass withholds the targets whose current rows the
    remaining exposing coalitions need;
    if a violation needed no open target's row (the history alone violates the rule, which an
    honest history never does), every target is withheld: nothing new is released.

    Raises:
        ConfigError: malformed arguments, or a history for another federation size.
    """
    if not isinstance(policy, WeightPolicy):
        raise ConfigError("policy must be a WeightPolicy")
    if policy.min_exposure == 0:
        return ()
    current = released_rows(weights, survivors=members)
    past = history.rows if history is not None else np.zeros_like(current)
    if past.shape != current.shape:
        raise ConfigError("the history is for a federation of another size")
    current = _settled(past, current)
    open_targets = {operator.index(m) for m in members}
    withheld = _alone_exposing(past, current, policy) & open_targets
    open_targets -= withheld
    while True:
        rows = current.copy()
        rows[sorted(withheld)] = 0.0
        violated, blamed = _violations(np.stack([past, rows]), policy, open_targets)
        if not violated:
            return tuple(sorted(withheld))
        if not blamed:
            return tuple(sorted(withheld | open_targets))
        withheld |= blamed
        open_targets -= blamed


def check_release(
    weights: npt.ArrayLike,
    policy: WeightPolicy,
    *,
    survivors: Sequence[int],
    withheld: Sequence[int],
    history: ReleaseHistory | None,
) -> None:
    """A contributor's check before it signs the consistency check: what the round will release
    over ``survivors`` (U3), less ``withheld``, keeps every party at ``min_exposure`` or above
    together with ``history``.

    Raises:
        WeightPolicyViolation: the rule fails (dropouts after masking removed contributors the
            exposure needed); ``violations`` names the blamed targets with
            :attr:`PolicyRule.EXPOSURE`.
        ConfigError: malformed arguments.
    """
    if not isinstance(policy, WeightPolicy):
        raise ConfigError("policy must be a WeightPolicy")
    if policy.min_exposure == 0:
        return
    rows = released_rows(weights, survivors=survivors, withheld=withheld)
    past = history.rows if history is not None else np.zeros_like(rows)
    if past.shape != rows.shape:
        raise ConfigError("the history is for a federation of another size")
    rows = _settled(past, rows)
    open_targets = {s for s in survivors if s not in set(withheld)}
    violated, blamed = _violations(np.stack([past, rows]), policy, open_targets)
    if violated:
        found = tuple((t, PolicyRule.EXPOSURE) for t in sorted(blamed))
        named = ", ".join(str(t) for t in sorted(blamed)) or "none"
        raise WeightPolicyViolation(
            f"after dropouts, the outputs of targets {named} together with the earlier releases "
            f"would expose a party below min_exposure {policy.min_exposure} against "
            f"{policy.colluders} colluder(s)",
            found,
        )


def check_claimed_history(
    claimed: ReleaseHistory | None, own: ReleaseHistory | None, *, round_: int
) -> None:
    """A client's check of the history the server sent against its own memory of the releases
    it took part in.

    Raises:
        RemoteProtocolError: the claim is for this or a later round; the client remembers a
            later release, or the same round with other rows, or one when the server claims
            none; or a history for another federation size.
    """
    if claimed is not None and claimed.round >= round_:
        raise RemoteProtocolError(
            f"the server's release history is from round {claimed.round}, not before {round_}"
        )
    if own is None:
        return
    if claimed is None:
        raise RemoteProtocolError(
            f"the server claims no release history; this client took part in the release of "
            f"round {own.round}"
        )
    if claimed.n_clients != own.n_clients:
        raise RemoteProtocolError("the server's release history is for another federation")
    if claimed.round < own.round:
        raise RemoteProtocolError(
            f"the server's release history stops at round {claimed.round}; this client took "
            f"part in the release of round {own.round}"
        )
    if claimed.round == own.round and claimed != own:
        raise RemoteProtocolError(
            f"the server's release history of round {own.round} differs from this client's"
        )
