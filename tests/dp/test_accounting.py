"""securefed.dp.accounting: the same numbers as Opacus, cross-checked against Google's PLD."""

from __future__ import annotations

import pytest
from dp_accounting import dp_event, pld
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from securefed.dp import AccountantKind, epsilon_for, extend_history, noise_multiplier_for
from securefed.errors import ConfigError

HISTORIES = [
    ((1.0, 0.01, 1000),),
    ((1.3, 0.1, 40),),
    ((1.1, 0.05, 30), (2.0, 0.05, 10)),  # heterogeneous: two sigmas
]

OPACUS = {AccountantKind.PRV: PRVAccountant, AccountantKind.RDP: RDPAccountant}


def _pld_epsilon(history: tuple[tuple[float, float, int], ...], delta: float) -> float:
    accountant = pld.PLDAccountant()
    for sigma, q, steps in history:
        accountant.compose(
            dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), steps
        )
    return float(accountant.get_epsilon(delta))


@pytest.mark.parametrize("kind", list(AccountantKind), ids=lambda k: k.value)
@pytest.mark.parametrize("history", HISTORIES, ids=["seed-example", "demo-like", "two-sigmas"])
def test_epsilon_for_equals_plain_opacus_exactly(
    kind: AccountantKind, history: tuple[tuple[float, float, int], ...]
) -> None:
    plain = OPACUS[kind]()
    plain.history = list(history)
    assert epsilon_for(kind, history, 1e-5) == plain.get_epsilon(1e-5)


def test_epsilon_of_an_empty_history_is_zero() -> None:
    assert epsilon_for(AccountantKind.PRV, (), 1e-5) == 0.0
    assert epsilon_for(AccountantKind.RDP, (), 1e-5) == 0.0


def test_prv_matches_google_pld_on_the_issue_example() -> None:
    """q = 0.01, sigma = 1.0, 1000 steps, delta = 1e-5: PLD 1.828, Opacus PRV 1.838."""
    history = ((1.0, 0.01, 1000),)
    independent = _pld_epsilon(history, 1e-5)
    prv = epsilon_for(AccountantKind.PRV, history, 1e-5)
    assert independent == pytest.approx(1.8282, abs=2e-3)
    assert prv == pytest.approx(1.8384, abs=2e-3)
    assert prv == pytest.approx(independent, rel=0.02)
    # RDP is the looser (but valid) bound: above both, by roughly 10-15%.
    rdp = epsilon_for(AccountantKind.RDP, history, 1e-5)
    assert 1.05 * independent < rdp < 1.25 * independent


@pytest.mark.parametrize("history", HISTORIES[1:], ids=["demo-like", "two-sigmas"])
def test_prv_is_within_a_few_percent_of_pld_and_never_below_it_by_much(
    history: tuple[tuple[float, float, int], ...],
) -> None:
    independent = _pld_epsilon(history, 1e-5)
    prv = epsilon_for(AccountantKind.PRV, history, 1e-5)
    assert prv == pytest.approx(independent, rel=0.03)
    assert prv >= 0.99 * independent  # an upper bound, not an underestimate


@pytest.mark.parametrize(
    ("kind", "target", "q", "steps"),
    [
        (AccountantKind.RDP, 3.0, 0.1, 40),
        (AccountantKind.PRV, 8.0, 64 / 331, 100),  # the demo's setting
        (AccountantKind.PRV, 2.0, 0.5, 10),
    ],
)
def test_noise_multiplier_for_is_opacus_get_noise_multiplier(
    kind: AccountantKind, target: float, q: float, steps: int
) -> None:
    ours = noise_multiplier_for(kind, target, 1e-5, q, steps)
    theirs = get_noise_multiplier(
        target_epsilon=target, target_delta=1e-5, sample_rate=q, steps=steps, accountant=kind.value
    )
    assert ours == theirs
    reached = epsilon_for(kind, ((ours, q, steps),), 1e-5)
    assert target - 0.02 <= reached <= target


def test_an_unreachable_target_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no noise multiplier reaches epsilon=1e-06"):
        noise_multiplier_for(AccountantKind.RDP, 1e-6, 1e-5, 1.0, 10_000)


def test_extend_history_merges_like_opacus_step() -> None:
    accountant = RDPAccountant()
    for _ in range(3):
        accountant.step(noise_multiplier=1.1, sample_rate=0.1)
    for _ in range(2):
        accountant.step(noise_multiplier=2.0, sample_rate=0.1)
    history = extend_history(extend_history((), 1.1, 0.1, 3), 2.0, 0.1, 2)
    assert list(history) == accountant.history == [(1.1, 0.1, 3), (2.0, 0.1, 2)]
    assert extend_history(history, 2.0, 0.1, 5) == ((1.1, 0.1, 3), (2.0, 0.1, 7))
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        extend_history(history, 2.0, 0.1, 0)
