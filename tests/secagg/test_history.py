"""The release history and the across-rounds exposure rule (securefed/secagg/history.py)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from securefed.errors import ConfigError, RemoteProtocolError, WeightPolicyViolation
from securefed.secagg.exposure import exposure_report
from securefed.secagg.history import (
    CHANGE_TOLERANCE,
    ReleaseHistory,
    check_claimed_history,
    check_release,
    released_rows,
    withheld_targets,
)
from securefed.secagg.policy import PolicyRule, WeightPolicy

Array = npt.NDArray[np.float64]
POLICY = WeightPolicy(k_min=3.0, cap=0.5)  # rho 0.5, one colluder
N = 8


def uniform(n: int = N) -> Array:
    weights = np.full((n, n), 0.5 / (n - 1))
    np.fill_diagonal(weights, 0.5)
    return weights


EVERYONE = list(range(N))


def full_history(round_: int = 1) -> ReleaseHistory:
    return ReleaseHistory.empty(N).after(round_, uniform(), survivors=EVERYONE)


# --- the record -------------------------------------------------------------------------------


def test_encoding_round_trips_and_is_canonical() -> None:
    history = full_history(7)
    data = history.to_bytes()
    back = ReleaseHistory.from_bytes(data, N)
    assert back == history
    assert back.round == 7
    np.testing.assert_array_equal(back.rows, history.rows)
    assert ReleaseHistory(7, -0.0 * np.ones((N, N)) + 0.0).to_bytes() == (
        ReleaseHistory(7, np.zeros((N, N))).to_bytes()
    )


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d[:-1],  # truncated
        lambda d: d + b"\x00",  # trailing bytes
        lambda d: b"\x02" + d[1:],  # another version
        lambda d: d[:5] + b"\x00\x00\x00\x00" + d[9:],  # a blob length that does not fit
        lambda d: b"",
    ],
)
def test_malformed_encodings_are_refused(mutate) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RemoteProtocolError):
        ReleaseHistory.from_bytes(mutate(full_history().to_bytes()), N)


def test_an_encoding_for_another_federation_size_is_refused() -> None:
    with pytest.raises(RemoteProtocolError):
        ReleaseHistory.from_bytes(full_history().to_bytes(), N + 1)


def test_a_negative_entry_on_the_wire_is_refused() -> None:
    data = bytearray(full_history().to_bytes())
    data[-8] |= 0x80  # the last float's sign bit
    with pytest.raises(RemoteProtocolError):
        ReleaseHistory.from_bytes(bytes(data), N)


@pytest.mark.parametrize(
    ("round_", "rows"),
    [
        (-1, np.zeros((N, N))),
        (True, np.zeros((N, N))),
        (1, np.zeros((N, N + 1))),
        (1, np.zeros((1, 1))),
        (1, np.full((N, N), np.nan)),
        (1, -np.ones((N, N))),
    ],
)
def test_bad_histories_are_config_errors(round_: object, rows: Array) -> None:
    with pytest.raises(ConfigError):
        ReleaseHistory(round_, rows)  # type: ignore[arg-type]


def test_after_replaces_the_rows_of_the_released_targets_only() -> None:
    before = full_history(1)
    survivors = [0, 1, 2, 4, 5, 6, 7]
    after = before.after(2, uniform(), survivors=survivors, withheld=[1])
    assert after.round == 2
    np.testing.assert_array_equal(after.rows[1], before.rows[1])  # withheld: unchanged
    np.testing.assert_array_equal(after.rows[3], before.rows[3])  # absent: unchanged
    assert after.rows[0, 3] == 0.0  # released over the survivors: no weight on 3
    assert after.rows[0, 1] == uniform()[0, 1]
    with pytest.raises(ConfigError):
        after.after(2, uniform(), survivors=survivors)  # not a later round


def test_released_rows_are_the_weights_restricted_to_the_survivors() -> None:
    rows = released_rows(uniform(), survivors=[0, 2, 5], withheld=[2])
    expected = np.zeros((N, N))
    expected[0, [0, 2, 5]] = uniform()[0, [0, 2, 5]]
    expected[5, [0, 2, 5]] = uniform()[5, [0, 2, 5]]
    np.testing.assert_array_equal(rows, expected)


# --- which outputs are withheld ----------------------------------------------------------------


def test_nothing_is_withheld_without_a_history_or_when_nothing_changed() -> None:
    assert withheld_targets(uniform(), POLICY, members=EVERYONE, history=None) == ()
    assert withheld_targets(uniform(), POLICY, members=EVERYONE, history=full_history()) == ()


def test_a_departure_withholds_every_row_that_changes_in_the_departed_coordinate_alone() -> None:
    members = [i for i in EVERYONE if i != 3]
    withheld = withheld_targets(uniform(), POLICY, members=members, history=full_history())
    assert withheld == tuple(members)
    # The same departure with only target 0 released before: only 0's row differences.
    rows = np.zeros((N, N))
    rows[0] = full_history().rows[0]
    only_zero = ReleaseHistory(1, rows)
    assert withheld_targets(uniform(), POLICY, members=members, history=only_zero) == (0,)


def test_the_withheld_set_restores_the_rule_over_both_rounds() -> None:
    members = [i for i in EVERYONE if i != 3]
    history = full_history()
    rows = np.zeros((N, N))
    rows[0] = history.rows[0]
    partial = ReleaseHistory(1, rows)
    withheld = withheld_targets(uniform(), POLICY, members=members, history=partial)
    released = released_rows(uniform(), survivors=members, withheld=withheld)
    report = exposure_report(np.stack([partial.rows, released]), collusion_bound=1)
    assert report.values.min() >= POLICY.min_exposure
    # ...and without withholding the rule fails for the departed party.
    everything = released_rows(uniform(), survivors=members)
    report = exposure_report(np.stack([partial.rows, everything]), collusion_bound=1)
    assert report.values[3] < 1e-6


def test_the_rule_off_withholds_nothing() -> None:
    off = WeightPolicy(k_min=3.0, cap=0.5, min_exposure=0.0)
    members = [i for i in EVERYONE if i != 3]
    assert withheld_targets(uniform(), off, members=members, history=full_history()) == ()
    check_release(uniform(), off, survivors=members, withheld=(), history=full_history())


def test_rows_that_change_in_many_coordinates_are_released() -> None:
    """A new weight that moves mass across many contributors (as recomputed attention does)
    differences into a spread vector, not one model."""
    changed = uniform()
    changed[0, 1:] = np.linspace(0.02, 0.12, N - 1)
    changed[0, 1:] *= 0.5 / changed[0, 1:].sum()
    assert withheld_targets(changed, POLICY, members=EVERYONE, history=full_history()) == ()


def test_a_weight_moved_onto_one_contributor_is_withheld() -> None:
    changed = uniform()
    changed[0, 1] += 0.05
    changed[0, 2:] -= 0.05 / (N - 2)
    assert withheld_targets(changed, POLICY, members=EVERYONE, history=full_history()) == (0,)


def test_withheld_targets_rejects_a_history_of_another_size() -> None:
    with pytest.raises(ConfigError):
        withheld_targets(uniform(), POLICY, members=EVERYONE, history=ReleaseHistory.empty(N + 1))


# --- the check after dropouts -------------------------------------------------------------------


def test_a_dropout_after_masking_fails_the_check_over_both_rounds() -> None:
    survivors = [i for i in EVERYONE if i != 3]
    check_release(uniform(), POLICY, survivors=EVERYONE, withheld=(), history=full_history())
    with pytest.raises(WeightPolicyViolation) as info:
        check_release(uniform(), POLICY, survivors=survivors, withheld=(), history=full_history())
    assert info.value.violations
    assert all(rule is PolicyRule.EXPOSURE for _, rule in info.value.violations)
    # Without a history the same dropout is fine (one round alone keeps the rule).
    check_release(uniform(), POLICY, survivors=survivors, withheld=(), history=None)


# --- the client's check of the server's claim --------------------------------------------------


def test_a_client_accepts_the_history_it_remembers_or_a_later_one() -> None:
    own = full_history(1)
    check_claimed_history(own, own, round_=2)
    later = own.after(3, uniform(), survivors=EVERYONE)
    check_claimed_history(later, own, round_=4)  # it missed round 3
    check_claimed_history(later, None, round_=4)  # no memory: nothing to compare
    check_claimed_history(None, None, round_=4)


@pytest.mark.parametrize(
    ("claimed_round", "own_round", "now", "altered", "message"),
    [
        (None, 1, 2, False, "no release history"),
        (1, 3, 4, False, "stops at round 1"),
        (1, 1, 2, True, "differs"),
        (2, None, 2, False, "not before 2"),
    ],
)
def test_a_client_refuses_a_server_history_that_contradicts_its_own(
    claimed_round: int | None, own_round: int | None, now: int, altered: bool, message: str
) -> None:
    own = full_history(own_round) if own_round is not None else None
    claimed = None
    if claimed_round is not None:
        rows = full_history().rows.copy()
        if altered:
            rows[0, 3] = 0.0
        claimed = ReleaseHistory(claimed_round, rows)
    with pytest.raises(RemoteProtocolError, match=message):
        check_claimed_history(claimed, own, round_=now)


def test_rounding_noise_in_the_weights_is_not_a_change_and_does_not_ratchet() -> None:
    """The server's float64 arithmetic moves honest weights by ~1e-14 between rounds: such a
    row counts as its last release (nothing withheld) and the history keeps the earlier row, so
    steps below the tolerance add up against it."""
    history = full_history()
    nudged = uniform()
    nudged[0, 1] += 0.5 * CHANGE_TOLERANCE
    nudged[0, 2] -= 0.5 * CHANGE_TOLERANCE
    assert withheld_targets(nudged, POLICY, members=EVERYONE, history=history) == ()
    after = history.after(2, nudged, survivors=EVERYONE)
    np.testing.assert_array_equal(after.rows, history.rows)  # the earlier row is kept
    moved = uniform()
    moved[0, 1] += 1e-9  # far above the tolerance: weight moved from the target onto client 1
    moved[0, 0] -= 1e-9
    assert withheld_targets(moved, POLICY, members=EVERYONE, history=after) == (0,)
