"""securefed: personalized federated learning between financial institutions.

Record-level differential privacy (Opacus), malicious-server-hardened secure aggregation with
dropout recovery, FedAMP personalization that never reveals a personalized aggregate to the
server, and a signed, hash-chained audit ledger. See README.md and docs/.

A whole run in one process: :func:`securefed.runtime.federated.run_federation` (``securefed
run``), on the one engine (:mod:`securefed.runtime.engine`). One round of that engine over plain
numpy vectors, for tests and external checks: ``securefed.testing.rounds.simulate_round`` (a test
harness: nothing in the package imports it).
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
