"""securefed: personalized federated learning between financial institutions.

Record-level differential privacy (Opacus), malicious-server-hardened secure aggregation with
dropout recovery, FedAMP personalization that never reveals a personalized aggregate to the
server, and a signed, hash-chained audit ledger. See README.md and docs/.

``securefed.simulate_round`` runs one round of the real protocol in memory (see
:mod:`securefed.runtime.simulate`); it is imported lazily so that ``import securefed`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["RoundResult", "__version__", "simulate_round"]

if TYPE_CHECKING:
    from securefed.runtime.simulate import RoundResult, simulate_round


def __getattr__(name: str) -> Any:
    if name in ("simulate_round", "RoundResult"):
        from securefed.runtime import simulate  # noqa: PLC0415 - lazy: keeps the root import light

        return getattr(simulate, name)
    raise AttributeError(f"module 'securefed' has no attribute {name!r}")
