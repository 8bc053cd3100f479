"""securefed: personalized federated learning between financial institutions.

Record-level differential privacy (Opacus), malicious-server-hardened secure aggregation with
dropout recovery, FedAMP personalization that never reveals a personalized aggregate to the
server, and a signed, hash-chained audit ledger. See README.md and docs/.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
