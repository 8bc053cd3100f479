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
    max_history_bytes,
    released_rows,
    withheld_targets,
)
from securefed.secagg.messages import MAX_HISTORY_BYTES
from securefed.secagg.policy import MAX_HISTORY_ROUNDS, MAX_WEIGHT_CLIENTS, PolicyRule, WeightPolicy

Array = npt.NDArray[np.float64]
POLICY = WeightPolicy(k_min=3.0, cap=0.5)  # rho 0.5, one colluder, a window of 3 rounds
W = POLICY.history_rounds
N = 8
EVERYONE = list(range(N))
WITHOUT_3 = [i for i in EVERYONE if i != 3]


def uniform(n: int = N) -> Array:
    weights = np.full((n, n), 0.5 / (n - 1))
    np.fill_diagonal(weights, 0.5)
    return weights


def full_history(round_: int = 1) -> ReleaseHistory:
    return ReleaseHistory.empty(N).after(round_, uniform(), survivors=EVERYONE, rounds=W)


def only_target_zero(round_: int = 1) -> ReleaseHistory:
    rows = np.zeros((N, N))
    rows[0] = full_history().releases[0][1][0]
    return ReleaseHistory(((round_, rows),), N)


def withheld(weights: Array, members: list[int], history: ReleaseHistory | None, round_: int):  # type: ignore[no-untyped-def]
    return withheld_targets(weights, POLICY, members=members, history=history, round_=round_)


# --- the record -------------------------------------------------------------------------------


def test_encoding_round_trips_and_is_canonical() -> None:
    history = full_history(7).after(8, uniform(), survivors=WITHOUT_3, rounds=W)
    data = history.to_bytes()
    back = ReleaseHistory.from_bytes(data, N)
    assert back == history
    assert back.round == 8
    assert [q for q, _ in back.releases] == [7, 8]
    zeros = np.zeros((N, N))
    assert ReleaseHistory(((7, -0.0 * np.ones((N, N))),), N) == ReleaseHistory(((7, zeros),), N)
    assert ReleaseHistory.from_bytes(ReleaseHistory.empty(N).to_bytes(), N).round == 0


def test_the_message_limit_holds_the_largest_history() -> None:
    assert max_history_bytes(MAX_WEIGHT_CLIENTS) <= MAX_HISTORY_BYTES


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d[:-1],  # truncated
        lambda d: d + b"\x00",  # trailing bytes
        lambda d: b"\x01" + d[1:],  # another version
        lambda d: d[:1] + (N + 1).to_bytes(4, "big") + d[5:],  # another federation size
        lambda d: d[:5] + (MAX_HISTORY_ROUNDS + 1).to_bytes(4, "big") + d[9:],  # too many
        lambda d: b"",
    ],
)
def test_malformed_encodings_are_refused(mutate) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RemoteProtocolError):
        ReleaseHistory.from_bytes(mutate(full_history().to_bytes()), N)


def test_an_encoding_for_another_federation_size_is_refused() -> None:
    with pytest.raises(RemoteProtocolError):
        ReleaseHistory.from_bytes(full_history().to_bytes(), N + 1)


def test_a_negative_entry_or_unordered_rounds_on_the_wire_are_refused() -> None:
    data = bytearray(full_history().to_bytes())
    data[-8] |= 0x80  # the last float's sign bit
    with pytest.raises(RemoteProtocolError):
        ReleaseHistory.from_bytes(bytes(data), N)
    two = full_history(5).after(6, uniform(), survivors=EVERYONE, rounds=W).to_bytes()
    swapped = bytearray(two)
    first_round = 9  # version, N, count
    swapped[first_round : first_round + 4] = (7).to_bytes(4, "big")  # 7 then 6: not increasing
    with pytest.raises(RemoteProtocolError):
        ReleaseHistory.from_bytes(bytes(swapped), N)


@pytest.mark.parametrize(
    ("releases", "n"),
    [
        (((0, np.zeros((N, N))),), N),  # round 0
        (((True, np.zeros((N, N))),), N),
        (((2, np.zeros((N, N))), (2, np.zeros((N, N)))), N),  # not increasing
        (((1, np.zeros((N, N + 1))),), N),
        (((1, np.full((N, N), np.nan)),), N),
        (((1, -np.ones((N, N))),), N),
        ((), 1),
        (tuple((q, np.zeros((N, N))) for q in range(1, MAX_HISTORY_ROUNDS + 2)), N),
    ],
)
def test_bad_histories_are_config_errors(releases: object, n: int) -> None:
    with pytest.raises(ConfigError):
        ReleaseHistory(releases, n)  # type: ignore[arg-type]


def test_after_adds_the_round_and_keeps_only_the_window() -> None:
    history = full_history(1)
    after = history.after(2, uniform(), survivors=WITHOUT_3, withheld=[1], rounds=W)
    assert [q for q, _ in after.releases] == [1, 2]
    rows = after.releases[-1][1]
    assert not rows[1].any()  # withheld: nothing released to it this round
    assert not rows[3].any()  # absent
    assert rows[0, 3] == 0.0  # released over the survivors: no weight on 3
    assert rows[0, 1] == uniform()[0, 1]
    third = after.after(3, uniform(), survivors=EVERYONE, rounds=W)
    assert [q for q, _ in third.releases] == [1, 2, 3]  # round 4's window: rounds 1 to 3
    later = third.after(5, uniform(), survivors=EVERYONE, rounds=W)
    assert [q for q, _ in later.releases] == [3, 5]  # round 6's window: rounds 3 to 5
    with pytest.raises(ConfigError):
        later.after(5, uniform(), survivors=EVERYONE, rounds=W)  # not a later round


def test_the_window_is_the_last_w_rounds_before_the_round() -> None:
    history = full_history(1).after(2, uniform(), survivors=EVERYONE, rounds=W)
    assert [q for q, _ in history.window(3, W)] == [1, 2]
    assert [q for q, _ in history.window(5, W)] == [2]
    assert history.stack(6, W).shape == (0, N, N)


def test_released_rows_are_the_weights_restricted_to_the_survivors() -> None:
    rows = released_rows(uniform(), survivors=[0, 2, 5], withheld=[2])
    expected = np.zeros((N, N))
    expected[0, [0, 2, 5]] = uniform()[0, [0, 2, 5]]
    expected[5, [0, 2, 5]] = uniform()[5, [0, 2, 5]]
    np.testing.assert_array_equal(rows, expected)


# --- which outputs are withheld ----------------------------------------------------------------


def test_nothing_is_withheld_without_a_history_or_when_nothing_changed() -> None:
    assert withheld(uniform(), EVERYONE, None, 2) == ()
    assert withheld(uniform(), EVERYONE, full_history(), 2) == ()


def test_a_departure_withholds_every_row_that_changes_in_the_departed_coordinate_alone() -> None:
    assert withheld(uniform(), WITHOUT_3, full_history(), 2) == tuple(WITHOUT_3)
    # The same departure with only target 0 released before: only 0's row differences.
    assert withheld(uniform(), WITHOUT_3, only_target_zero(), 2) == (0,)


def test_a_release_outside_the_window_no_longer_counts() -> None:
    assert withheld(uniform(), WITHOUT_3, full_history(1), 1 + W) == tuple(WITHOUT_3)
    assert withheld(uniform(), WITHOUT_3, full_history(1), 2 + W) == ()


def test_every_release_in_the_window_counts_not_just_the_last() -> None:
    """The three-round chain: A (everyone), B (3 absent, target 0 reweighted), C (3 absent,
    back to A's weights without 3). B is released to target 0 (A and B together keep the
    rule); C alone against B would pass, but against A it differs in 3's coordinate alone."""
    chained = uniform()
    row = np.array([0.5, 0.16, 0.16, 0.0, 0.045, 0.045, 0.045, 0.045])
    chained[0] = row / row.sum()
    first = full_history(1)
    assert 0 not in withheld(chained, WITHOUT_3, first, 2)
    second = first.after(2, chained, survivors=WITHOUT_3, withheld=WITHOUT_3[1:], rounds=W)
    assert 0 in withheld(uniform(), WITHOUT_3, second, 3)
    last_only = ReleaseHistory((second.releases[-1],), N)  # the old rule: the last row only
    assert 0 not in withheld(uniform(), WITHOUT_3, last_only, 3)


def test_the_withheld_set_restores_the_rule_over_the_window() -> None:
    partial = only_target_zero()
    chosen = withheld(uniform(), WITHOUT_3, partial, 2)
    past = partial.stack(2, W)
    released = released_rows(uniform(), survivors=WITHOUT_3, withheld=chosen)
    report = exposure_report(np.concatenate([past, released[None]]), collusion_bound=1)
    assert report.values.min() >= POLICY.min_exposure
    everything = released_rows(uniform(), survivors=WITHOUT_3)
    report = exposure_report(np.concatenate([past, everything[None]]), collusion_bound=1)
    assert report.values[3] < 1e-6  # ...and without withholding the rule fails for 3


def test_the_rule_off_withholds_nothing() -> None:
    off = WeightPolicy(k_min=3.0, cap=0.5, min_exposure=0.0)
    kwargs = {"history": full_history(), "round_": 2}
    assert withheld_targets(uniform(), off, members=WITHOUT_3, **kwargs) == ()  # type: ignore[arg-type]
    check_release(uniform(), off, survivors=WITHOUT_3, withheld=(), **kwargs)  # type: ignore[arg-type]


def test_rows_that_change_in_many_coordinates_are_released() -> None:
    """A new weight that moves mass across many contributors (as recomputed attention does)
    differences into a spread vector, not one model."""
    changed = uniform()
    changed[0, 1:] = np.linspace(0.02, 0.12, N - 1)
    changed[0, 1:] *= 0.5 / changed[0, 1:].sum()
    assert withheld(changed, EVERYONE, full_history(), 2) == ()


def test_a_weight_moved_onto_one_contributor_is_withheld() -> None:
    changed = uniform()
    changed[0, 1] += 0.05
    changed[0, 2:] -= 0.05 / (N - 2)
    assert withheld(changed, EVERYONE, full_history(), 2) == (0,)


def test_rounding_noise_in_the_weights_is_not_a_change_and_does_not_ratchet() -> None:
    """The server's float64 arithmetic moves honest weights by ~1e-14 between rounds: such a
    row counts as its latest release (nothing withheld) and is stored as that release, so steps
    below the tolerance cannot add up."""
    history = full_history()
    nudged = uniform()
    nudged[0, 1] += 0.5 * CHANGE_TOLERANCE
    nudged[0, 2] -= 0.5 * CHANGE_TOLERANCE
    assert withheld(nudged, EVERYONE, history, 2) == ()
    after = history.after(2, nudged, survivors=EVERYONE, rounds=W)
    np.testing.assert_array_equal(after.releases[-1][1], history.releases[-1][1])
    moved = uniform()
    moved[0, 1] += 1e-9  # far above the tolerance: weight moved from the target onto client 1
    moved[0, 0] -= 1e-9
    assert withheld(moved, EVERYONE, after, 3) == (0,)


def test_withheld_targets_rejects_a_history_of_another_size() -> None:
    with pytest.raises(ConfigError):
        withheld(uniform(), EVERYONE, ReleaseHistory.empty(N + 1), 2)


# --- the check after dropouts -------------------------------------------------------------------


def test_a_dropout_after_masking_fails_the_check_over_the_window() -> None:
    kwargs = {"withheld": (), "history": full_history(), "round_": 2}
    check_release(uniform(), POLICY, survivors=EVERYONE, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(WeightPolicyViolation) as info:
        check_release(uniform(), POLICY, survivors=WITHOUT_3, **kwargs)  # type: ignore[arg-type]
    assert info.value.violations
    assert all(rule is PolicyRule.EXPOSURE for _, rule in info.value.violations)
    # Without a history the same dropout is fine (one round alone keeps the rule).
    check_release(uniform(), POLICY, survivors=WITHOUT_3, withheld=(), history=None, round_=2)


# --- the client's check of the server's claim --------------------------------------------------


def test_a_client_accepts_a_claim_that_holds_its_own_releases() -> None:
    own = full_history(1)
    check_claimed_history(own, own, round_=2, rounds=W)
    later = own.after(3, uniform(), survivors=EVERYONE, rounds=W)
    check_claimed_history(later, own, round_=4, rounds=W)  # it missed round 3
    check_claimed_history(later, None, round_=4, rounds=W)  # no record: nothing to compare
    check_claimed_history(None, None, round_=4, rounds=W)
    check_claimed_history(None, own, round_=1 + W + 1, rounds=W)  # its release is out of window


def test_a_phantom_release_cannot_hide_a_release_the_client_saw() -> None:
    """A server that claims a round 2 the client never saw close, with rows equal to round 3's
    (so that nothing looks changed), must still include the client's round 1: then round 3's
    rows are judged against round 1's and withheld."""
    own = full_history(1)
    phantom_rows = released_rows(uniform(), survivors=WITHOUT_3)
    phantom = ReleaseHistory(((2, phantom_rows),), N)
    with pytest.raises(RemoteProtocolError, match="leaves out round 1"):
        check_claimed_history(phantom, own, round_=3, rounds=W)
    honest_plus_phantom = ReleaseHistory((*own.releases, (2, phantom_rows)), N)
    check_claimed_history(honest_plus_phantom, own, round_=3, rounds=W)
    assert withheld(uniform(), WITHOUT_3, honest_plus_phantom, 3) == tuple(WITHOUT_3)


@pytest.mark.parametrize(
    ("claimed_round", "own_round", "now", "altered", "message"),
    [
        (None, 1, 2, False, "no release history"),
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
        rows = full_history().releases[0][1].copy()
        if altered:
            rows[0, 3] = 0.0
        claimed = ReleaseHistory(((claimed_round, rows),), N)
    with pytest.raises(RemoteProtocolError, match=message):
        check_claimed_history(claimed, own, round_=now, rounds=W)
