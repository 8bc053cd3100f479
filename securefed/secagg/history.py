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

**The rule.** Every party keeps a :class:`ReleaseHistory`: what each of the last W rounds
released (``WeightPolicy.history_rounds``, default 3), one N x N matrix per round whose row c is
target c's row of ξ restricted to itself and that round's surviving contributors (zeros when c
got no output). The rows of those rounds count as combinations of the *current* models. In round
r the exposure rule is applied to the history's rows of rounds r - W .. r - 1 and this round's
rows *together* (``exposure_report`` over the stack: a coalition knows every row of each of its
members). A target whose new row would let a coalition of at most ``n_C`` clients (with the
server) read some party below ``min_exposure`` gets **no output this round**:
:func:`withheld_targets` picks them greedily and deterministically from public inputs (ξ, the
members U2' the server settled on, the history bound into the transcript), so every honest
contributor and the server compute the same set, the contributors send no masked input for
those targets, and the server could not unmask one even if it tried. A target whose row did not
change adds nothing (its span is already known) and is never withheld for it. The round's other
outputs go ahead.

After masking, dropouts can still shrink the released rows (U3 ⊂ U2'); then every contributor
checks the rounds together once more (:func:`check_release`) and refuses to sign the consistency
check if the rule fails, as it does for one round (docs/fedamp.md).

**Who keeps the history.** The server sends its history in the key directory (bound into the
transcript, so every survivor signs the same one). A client compares it with its own record of
the releases it saw close (:func:`check_claimed_history`): every round of its own record that is
still in the window must be in the claim with the same rows, and a claim about this or a later
round is refused. So a server cannot leave out, or rewrite, a release that an honest survivor
took part in; it can invent a release for a round the client missed, which only adds rows (and
withholds more). The history takes in a round once the consistency check closes (the server
holds t signatures and can unmask from then on, whatever it does next):
:meth:`ReleaseHistory.after`.

**What it does not cover.** Rows older than W rounds: a coalition that waits W + 1 rounds and bets
that the models did not move in between is outside the rule (docs/fedamp.md,
threat_model/residual_risk.md). A client that took part in none of the window's rounds (new, or
its state lost) cannot check the server's claim.

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
    MAX_HISTORY_ROUNDS,
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
    "max_history_bytes",
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
_VERSION: Final = 2
_MAX_ROUND: Final = (1 << 32) - 1


@dataclass(frozen=True, slots=True, eq=False)
class ReleaseHistory:
    """What the last attention rounds released, round by round.

    Attributes:
        releases: ``(round, rows)`` pairs, rounds strictly increasing, at most
            :data:`~securefed.secagg.policy.MAX_HISTORY_ROUNDS` of them; ``rows`` is N x N and
            read-only, row c the coefficients target c was released that round (its ξ entries on
            itself and the round's surviving contributors), zeros if it got no output.
        n_clients: N.
    """

    releases: tuple[tuple[int, FloatArray], ...]
    n_clients: int

    def __post_init__(self) -> None:
        n = self.n_clients
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ConfigError("a release history needs n_clients >= 2")
        if len(self.releases) > MAX_HISTORY_ROUNDS:
            raise ConfigError(f"a release history keeps at most {MAX_HISTORY_ROUNDS} rounds")
        checked: list[tuple[int, FloatArray]] = []
        previous = 0
        for round_, values in self.releases:
            if isinstance(round_, bool) or not isinstance(round_, int):
                raise ConfigError("a release's round must be an int")
            if not previous < round_ <= _MAX_ROUND:
                raise ConfigError("release rounds must be increasing, in [1, 2^32 - 1]")
            rows = np.array(values, dtype=np.float64)  # a private copy
            if rows.shape != (n, n):
                raise ConfigError(f"a release must be an N x N matrix with N = {n}")
            if not np.isfinite(rows).all() or (rows < 0).any():
                raise ConfigError("released rows must be finite and non-negative")
            rows += 0.0  # -0.0 -> 0.0: equal histories have equal encodings
            rows.flags.writeable = False
            checked.append((round_, rows))
            previous = round_
        object.__setattr__(self, "releases", tuple(checked))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReleaseHistory):
            return NotImplemented
        return self.to_bytes() == other.to_bytes()

    def __hash__(self) -> int:
        return hash(self.to_bytes())

    @property
    def round(self) -> int:
        """The last round whose release it includes (0 for an empty history)."""
        return self.releases[-1][0] if self.releases else 0

    @classmethod
    def empty(cls, n_clients: int) -> ReleaseHistory:
        """No output released yet."""
        return cls((), n_clients)

    def window(self, round_: int, rounds: int) -> tuple[tuple[int, FloatArray], ...]:
        """The releases that count in round ``round_``: rounds ``round_ - rounds`` to
        ``round_ - 1``."""
        return tuple((q, rows) for q, rows in self.releases if round_ - rounds <= q < round_)

    def stack(self, round_: int, rounds: int) -> FloatArray:
        """:meth:`window` as a K x N x N stack (0 x N x N when nothing counts)."""
        kept = [rows for _, rows in self.window(round_, rounds)]
        if not kept:
            return np.zeros((0, self.n_clients, self.n_clients))
        return np.stack(kept)

    def after(
        self,
        round_: int,
        weights: npt.ArrayLike,
        *,
        survivors: Sequence[int],
        withheld: Sequence[int] = (),
        rounds: int,
    ) -> ReleaseHistory:
        """The history once round ``round_`` released each survivor's row except ``withheld``,
        keeping the releases that count from round ``round_ + 1`` on (the last ``rounds``).
        A row within :data:`CHANGE_TOLERANCE` of its latest release is kept as that release.

        Raises:
            ConfigError: ``round_`` not after :attr:`round`, or shapes and indices that do not
                fit (:func:`released_rows`).
        """
        if isinstance(round_, bool) or not isinstance(round_, int) or round_ <= self.round:
            raise ConfigError(f"round {round_!r} is not after the history's round {self.round}")
        current = released_rows(weights, survivors=survivors, withheld=withheld)
        if current.shape != (self.n_clients, self.n_clients):
            raise ConfigError("the weights and the history are for different federations")
        current = _settled(self.stack(round_, rounds), current)
        kept = [(q, rows) for q, rows in self.window(round_ + 1, rounds) if q < round_]
        return ReleaseHistory((*kept, (round_, current)), self.n_clients)

    def to_bytes(self) -> bytes:
        """``version (u8) ‖ N (u32) ‖ count (u32)``, then per release ``round (u32) ‖ blob(rows
        as policy.encode_weights writes them)``."""
        w = Writer().u8(_VERSION).u32(self.n_clients).u32(len(self.releases))
        for round_, rows in self.releases:
            w.u32(round_).blob(encode_weights(rows), limit=_limit(self.n_clients))
        return w.getvalue()

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
            if version != _VERSION:
                raise RemoteProtocolError(f"release history version {version} is not {_VERSION}")
            if reader.u32() != n_clients:
                raise RemoteProtocolError("a release history for another federation size")
            count = reader.u32()
            if count > MAX_HISTORY_ROUNDS:
                raise RemoteProtocolError("a release history with too many rounds")
            releases = []
            for _ in range(count):
                round_ = reader.u32()
                rows = decode_weights(reader.blob(limit=_limit(n_clients)), n_clients)
                releases.append((round_, rows))
            reader.finish()
            history = cls(tuple(releases), n_clients)
        except ConfigError as exc:
            raise RemoteProtocolError(f"bad release history: {exc}") from exc
        if history.to_bytes() != data:  # pragma: no cover - decode_weights is canonical
            raise RemoteProtocolError("a release history that is not canonical")
        return history


def _limit(n_clients: int) -> int:
    return 9 + 8 * n_clients * n_clients


def max_history_bytes(n_clients: int) -> int:
    """The largest encoding of a history for ``n_clients`` parties."""
    return 9 + MAX_HISTORY_ROUNDS * (4 + 4 + _limit(n_clients))


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
    released = set(targets)
    silent = [i for i in range(rows.shape[0]) if i not in released]
    rows[silent] = 0.0
    return rows


def _latest(past: FloatArray) -> FloatArray:
    """For each target, its most recent non-zero row in the stack (zeros if none)."""
    latest = np.zeros(past.shape[1:])
    for rows in past:  # oldest first: later releases overwrite
        released = np.abs(rows).max(axis=1) > 0
        latest[released] = rows[released]
    return latest


def _settled(past: FloatArray, rows: FloatArray) -> FloatArray:
    """``rows`` with every row within :data:`CHANGE_TOLERANCE` of its latest release in ``past``
    replaced by that release (exactly)."""
    if not past.shape[0]:
        return rows
    latest = _latest(past)
    same = np.abs(rows - latest).max(axis=1) <= CHANGE_TOLERANCE
    settled: FloatArray = np.where(same[:, None], latest, rows)
    return settled


def _alone_exposing(past: FloatArray, rows: FloatArray, policy: WeightPolicy) -> set[int]:
    """The targets whose own rows (every release in ``past`` and ``rows``) already expose some
    other party below ``min_exposure``: the coalition {c} is always allowed (``colluders >=
    1``), and only withholding c's new row fixes it, so every valid withheld set contains them.
    One batched SVD of N matrices N x (K + 1): a cheap first pass before the greedy search over
    larger coalitions (a departure changes every row in one coordinate, and would otherwise
    cost one exposure report per pass)."""
    if policy.colluders == 0:
        return set()
    n = rows.shape[0]
    matrix = np.concatenate([past, rows[None]]).transpose(1, 2, 0)  # c, coordinate v, release
    matrix[np.arange(n), np.arange(n), :] = 0.0  # c's own coordinate is known to it
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
    left, singular, _ = np.linalg.svd(matrix, full_matrices=False)
    explained = np.einsum("cvk,ck->cv", left * left, (singular > RANK_TOLERANCE).astype(float))
    explained[np.arange(n), np.arange(n)] = 0.0
    limit = policy.min_exposure * (1 - RULE_TOLERANCE)
    distances = np.sqrt(np.clip(1.0 - explained.max(axis=1), 0.0, 1.0))
    return {int(c) for c in np.flatnonzero(distances < limit)}


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


def _past(history: ReleaseHistory | None, n: int, round_: int, policy: WeightPolicy) -> FloatArray:
    if history is None:
        return np.zeros((0, n, n))
    if history.n_clients != n:
        raise ConfigError("the history is for a federation of another size")
    return history.stack(round_, policy.history_rounds)


def withheld_targets(
    weights: npt.ArrayLike,
    policy: WeightPolicy,
    *,
    members: Sequence[int],
    history: ReleaseHistory | None,
    round_: int,
) -> tuple[int, ...]:
    """The targets among ``members`` (U2') whose outputs round ``round_`` must withhold: the
    least set, found greedily, such that the history's releases in the window
    (``policy.history_rounds``) and the rows released to the other members (each restricted to
    the members) keep every party at ``min_exposure`` or above against ``policy.colluders``
    colluding clients. Deterministic in its inputs: the server and every contributor compute
    the same set. ``()`` when the rule is off (``min_exposure = 0``).

    First every target whose own rows expose someone is withheld (necessary: the coalition of
    that target alone sees it). Then each pass withholds the targets whose current rows the
    remaining exposing coalitions need; if a violation needed no open target's row (the history
    alone violates the rule, which an honest history never does), every target is withheld:
    nothing new is released.

    Raises:
        ConfigError: malformed arguments, or a history for another federation size.
    """
    if not isinstance(policy, WeightPolicy):
        raise ConfigError("policy must be a WeightPolicy")
    if policy.min_exposure == 0:
        return ()
    current = released_rows(weights, survivors=members)
    past = _past(history, current.shape[0], round_, policy)
    current = _settled(past, current)
    open_targets = {operator.index(m) for m in members}
    withheld = _alone_exposing(past, current, policy) & open_targets
    open_targets -= withheld
    while True:
        rows = current.copy()
        rows[sorted(withheld)] = 0.0
        violated, blamed = _violations(np.concatenate([past, rows[None]]), policy, open_targets)
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
    round_: int,
) -> None:
    """A contributor's check before it signs the consistency check of round ``round_``: what
    the round will release over ``survivors`` (U3), less ``withheld``, keeps every party at
    ``min_exposure`` or above together with the history's releases in the window.

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
    past = _past(history, rows.shape[0], round_, policy)
    rows = _settled(past, rows)
    open_targets = set(survivors) - set(withheld)
    violated, blamed = _violations(np.concatenate([past, rows[None]]), policy, open_targets)
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
    claimed: ReleaseHistory | None,
    own: ReleaseHistory | None,
    *,
    round_: int,
    rounds: int,
) -> None:
    """A client's check, in round ``round_``, of the history the server sent against its own
    record of the releases it saw close: every release of its own in the window of the last
    ``rounds`` rounds must be in the claim, with the same rows.

    Raises:
        RemoteProtocolError: the claim includes this or a later round, is for another
            federation size, or leaves out or alters a release in the client's own record.
    """
    if claimed is not None and claimed.round >= round_:
        raise RemoteProtocolError(
            f"the server's release history is from round {claimed.round}, not before {round_}"
        )
    if own is None:
        return
    mine = own.window(round_, rounds)
    if not mine:
        return
    if claimed is None:
        raise RemoteProtocolError(
            f"the server claims no release history; this client took part in the release of "
            f"round {mine[-1][0]}"
        )
    if claimed.n_clients != own.n_clients:
        raise RemoteProtocolError("the server's release history is for another federation")
    theirs = dict(claimed.window(round_, rounds))
    for q, rows in mine:
        if q not in theirs:
            raise RemoteProtocolError(
                f"the server's release history leaves out round {q}, whose release this "
                f"client took part in"
            )
        if not np.array_equal(theirs[q], rows):
            raise RemoteProtocolError(
                f"the server's release history of round {q} differs from this client's"
            )
