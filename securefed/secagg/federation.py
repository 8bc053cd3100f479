"""A roster together with every party's private identity key: one process plays every party.

The in-memory transport (``securefed run``, ``securefed demo``, the benchmarks) and the tests run
all institutions and the server in one process, so one object holds all their signing keys. A
deployment never builds one: each institution loads only its own key (``securefed keys``).
"""

from __future__ import annotations

from dataclasses import dataclass

from securefed.crypto import SigningKey, get_suite
from securefed.secagg.roster import ClientParty, Roster, ServerParty

__all__ = ["Federation", "make_federation"]


@dataclass(frozen=True, slots=True)
class Federation:
    """A roster with the private identity keys of every party (``client_keys`` in roster order)."""

    roster: Roster
    server_key: SigningKey
    client_keys: tuple[SigningKey, ...]


def make_federation(
    n_clients: int, *, suite: str = "default", party_ids: tuple[str, ...] | None = None
) -> Federation:
    """A roster of ``n_clients`` fresh clients and a server, with fresh identity keys from the
    operating system's CSPRNG. Ids are ``party_ids`` or ``bank-<i>``; the server is ``server``."""
    ids = party_ids if party_ids is not None else tuple(f"bank-{i}" for i in range(n_clients))
    cipher_suite = get_suite(suite)
    server_key = cipher_suite.generate_signing_key()
    client_keys = tuple(cipher_suite.generate_signing_key() for _ in range(n_clients))
    roster = Roster(
        suite=cipher_suite,
        server=ServerParty("server", server_key.verify_key()),
        clients=tuple(ClientParty(ids[i], i, k.verify_key()) for i, k in enumerate(client_keys)),
    )
    return Federation(roster, server_key, client_keys)
