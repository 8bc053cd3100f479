"""``securefed bench secagg --baseline flower``: one SecAgg+ round on Flower's own primitives.

:func:`run_flower_round` runs, in this process and one party after another, what Flower's
``secaggplus_mod`` (client) and ``SecAggPlusWorkflow`` (server) compute in one round when every
client is a neighbour of every other (the complete graph, ``num_shares = N``). It calls Flower's
own functions in Flower's order and leaves out only the message transport (``Message``/
``RecordDict`` plumbing and ``ndarray_to_bytes``/``bytes_to_ndarray`` of the masked vectors), so
the time is Flower's compute cost, not its I/O:

* **setup** (client): two SECP384R1 key pairs (``generate_key_pairs``), kept PEM-serialised as
  Flower keeps them in its state record.
* **share keys** (client): a 32-byte ``rd_seed`` (``os.urandom``), ``create_shares`` of ``rd_seed``
  and of the PEM ``sk1`` (threshold t, N shares), and for every other client the Fernet key
  ``generate_shared_key(sk2, pk2_v)`` and ``encrypt`` of ``share_keys_plaintext_concat(...)``.
  The server routes the ciphertexts to their recipients.
* **collect masked vectors** (surviving clients): ``decrypt`` and ``share_keys_plaintext_separate``
  of every received bundle, then ``parameters_multiply`` by the weight ratio, ``quantize``,
  ``factor_combine``, the private mask ``pseudo_rand_gen(rd_seed)``, one pairwise mask
  ``pseudo_rand_gen(generate_shared_key(sk1, pk1_v))`` per other client (added if its own id is
  larger, subtracted otherwise) and ``parameters_mod``. ``dropouts`` clients (the highest ids)
  drop after sharing keys and send nothing more. The server sums the masked vectors and
  reduces them mod 2^32.
* **unmask**: survivors hand in their shares of every survivor's ``rd_seed`` and every dropped
  client's ``sk1``; the server runs ``combine_shares`` on all collected shares of each client (as
  Flower does, not only t of them), subtracts each survivor's private mask, removes each dropped
  client's pairwise masks with the survivors, and then ``factor_extract``, ``dequantize`` and the
  offset/weight correction of ``SecAggPlusWorkflow.unmask_stage``.

With several dropouts Flower's server also regenerates the (cancelling) masks between two dropped
clients; this baseline skips them, which can only make Flower look faster. Every client's weight is
``max_weight`` (ratio 1), so Flower's weighted average times the number of survivors is their sum;
``correct`` compares that with the plaintext sum, within one quantization step per term.

Parameters are those of ``SecAggPlusWorkflow.__init__`` in flwr 1.42.0 (clipping range 8.0,
quantization range 2^22, modulus 2^32, max weight 1000.0); t defaults to securefed's ⌊2N/3⌋ + 1
(DESIGN §3 R1) so that both implementations run with the same threshold. At that threshold the
cost grows with N mostly in Flower's Shamir sharing (pycryptodome's pure-Python GF(2^128)
arithmetic behind a thread pool): ``create_shares`` is O(t N) per secret, ``combine_shares``
O(k^2) in the number k of shares passed.

Not comparable security: Flower's masks come from ``pseudo_rand_gen``, which XOR-folds each seed to
32 bits and feeds it to numpy's Mersenne Twister (``np.random.RandomState``); its stochastic
rounding also draws from numpy's global generator. Part of Flower's speed is this weakness -- our
masks are AES-256-CTR keystreams under full 256-bit keys (DESIGN §3 R5). This module itself never
touches ``numpy.random``; only Flower does, internally.

flwr is an optional extra and is imported lazily: securefed works without it, and
:func:`flower_available` says whether the baseline can run.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from securefed.errors import ConfigError

__all__ = [
    "CLIPPING_RANGE",
    "MAX_WEIGHT",
    "MODULUS_RANGE",
    "QUANTIZATION_RANGE",
    "FlowerBaselineResult",
    "flower_available",
    "run_flower_round",
]

# Defaults of flwr.server.workflow.SecAggPlusWorkflow.__init__ (flwr 1.42.0); a test checks them
# against the installed flwr.
CLIPPING_RANGE = 8.0
QUANTIZATION_RANGE = 1 << 22
MODULUS_RANGE = 1 << 32
MAX_WEIGHT = 1000.0

_INSTALL_HINT = "the Flower baseline needs flwr: run `make bench`, or `pip install -e '.[bench]'`"

_Arrays = list[np.ndarray[Any, Any]]


@dataclass(frozen=True, slots=True)
class FlowerBaselineResult:
    """One Flower SecAgg+ round (see module docstring). Times in seconds, ``time.perf_counter``.

    ``total_s`` is every client's work (dropped clients' included) plus the server's, run one
    after another; ``client_s`` is the median over the clients that finish the round.
    """

    flower_version: str
    n_clients: int
    dim: int
    dropouts: int
    total_s: float
    client_s: float
    server_s: float
    correct: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def flower_available() -> bool:
    """True when flwr is importable (the ``bench`` extra is installed)."""
    try:
        return importlib.util.find_spec("flwr") is not None
    except (ImportError, ValueError):
        return False


@dataclass(slots=True)
class _Client:
    """The state Flower's ``SecAggPlusState`` keeps between stages (keys PEM-encoded, as there)."""

    nid: int
    threshold: int
    share_num: int
    sk1: bytes = b""
    pk1: bytes = b""
    sk2: bytes = b""
    pk2: bytes = b""
    rd_seed: bytes = b""
    public_keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    rd_seed_shares: dict[int, bytes] = field(default_factory=dict)
    sk1_shares: dict[int, bytes] = field(default_factory=dict)
    ss2: dict[int, bytes] = field(default_factory=dict)
    elapsed: float = 0.0


# Every Flower function this baseline calls, by module (flwr 1.42.0). Looked up lazily by
# `_flower()`, so that importing securefed never imports flwr.
_FLOWER_API: dict[str, tuple[str, ...]] = {
    "flwr.supercore.primitives.asymmetric": (
        "generate_key_pairs",
        "private_key_to_bytes",
        "public_key_to_bytes",
        "bytes_to_private_key",
        "bytes_to_public_key",
    ),
    "flwr.common.secure_aggregation.crypto.symmetric_encryption": (
        "generate_shared_key",
        "encrypt",
        "decrypt",
    ),
    "flwr.common.secure_aggregation.crypto.shamir": ("create_shares", "combine_shares"),
    "flwr.common.secure_aggregation.secaggplus_utils": (
        "share_keys_plaintext_concat",
        "share_keys_plaintext_separate",
        "pseudo_rand_gen",
    ),
    "flwr.common.secure_aggregation.quantization": ("quantize", "dequantize"),
    "flwr.common.secure_aggregation.ndarrays_arithmetic": (
        "factor_combine",
        "factor_extract",
        "get_parameters_shape",
        "parameters_addition",
        "parameters_subtraction",
        "parameters_multiply",
        "parameters_mod",
    ),
}


@functools.cache
def _flower() -> SimpleNamespace:
    """Flower's SecAgg+ primitives as one namespace; ConfigError if flwr is not installed."""
    if not flower_available():
        raise ConfigError(_INSTALL_HINT)
    try:
        api = {"__version__": importlib.import_module("flwr").__version__}
        for module_name, names in _FLOWER_API.items():
            module = importlib.import_module(module_name)
            api.update({name: getattr(module, name) for name in names})
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{_INSTALL_HINT} (flwr==1.42.0 API expected: {exc})") from exc
    return SimpleNamespace(**api)


def _setup(client: _Client) -> tuple[bytes, bytes]:
    """Flower ``_setup``: two key pairs, one for pairwise masks, one for share encryption."""
    fl = _flower()
    sk1, pk1 = fl.generate_key_pairs()
    sk2, pk2 = fl.generate_key_pairs()
    client.sk1, client.pk1 = fl.private_key_to_bytes(sk1), fl.public_key_to_bytes(pk1)
    client.sk2, client.pk2 = fl.private_key_to_bytes(sk2), fl.public_key_to_bytes(pk2)
    return client.pk1, client.pk2


def _share_keys(
    client: _Client, public_keys: dict[int, tuple[bytes, bytes]]
) -> list[tuple[int, int, bytes]]:
    """Flower ``_share_keys``: Shamir-share rd_seed and sk1, encrypt one bundle per neighbour."""
    fl = _flower()
    client.public_keys = public_keys
    all_pks = [pk for pair in public_keys.values() for pk in pair]
    if len(public_keys) < client.threshold or len(set(all_pks)) != len(all_pks):
        raise ConfigError("Flower baseline: too few or duplicate public keys")
    client.rd_seed = os.urandom(32)
    b_shares = fl.create_shares(client.rd_seed, client.threshold, client.share_num)
    sk1_shares = fl.create_shares(client.sk1, client.threshold, client.share_num)
    out: list[tuple[int, int, bytes]] = []
    for idx, (nid, (_, pk2)) in enumerate(public_keys.items()):
        if nid == client.nid:
            client.rd_seed_shares[nid] = b_shares[idx]
            client.sk1_shares[nid] = sk1_shares[idx]
            continue
        shared_key = fl.generate_shared_key(
            fl.bytes_to_private_key(client.sk2), fl.bytes_to_public_key(pk2)
        )
        client.ss2[nid] = shared_key
        plaintext = fl.share_keys_plaintext_concat(client.nid, nid, b_shares[idx], sk1_shares[idx])
        out.append((client.nid, nid, fl.encrypt(shared_key, plaintext)))
    return out


def _receive_shares(client: _Client, bundles: list[tuple[int, bytes]]) -> list[int]:
    """First half of Flower ``_collect_masked_vectors``: decrypt and store the received shares."""
    fl = _flower()
    if len(bundles) + 1 < client.threshold:
        raise ConfigError("Flower baseline: not enough neighbours")
    sources: list[int] = []
    for src, ciphertext in bundles:
        plaintext = fl.decrypt(client.ss2[src], ciphertext)
        actual_src, dst, rd_seed_share, sk1_share = fl.share_keys_plaintext_separate(plaintext)
        if actual_src != src or dst != client.nid:
            raise ConfigError("Flower baseline: share bundle routed to the wrong client")
        sources.append(src)
        client.rd_seed_shares[src] = rd_seed_share
        client.sk1_shares[src] = sk1_share
    return sources


def _masked_input(client: _Client, sources: list[int], x: np.ndarray[Any, Any]) -> _Arrays:
    """Second half of Flower ``_collect_masked_vectors``: weight, quantize, mask, reduce."""
    fl = _flower()
    q_ratio = round(MAX_WEIGHT / MAX_WEIGHT * QUANTIZATION_RANGE)  # num_examples = max_weight
    params = fl.parameters_multiply([x], q_ratio / QUANTIZATION_RANGE)
    quantized = fl.factor_combine(q_ratio, fl.quantize(params, CLIPPING_RANGE, QUANTIZATION_RANGE))
    dims = [a.shape for a in quantized]
    private_mask = fl.pseudo_rand_gen(client.rd_seed, MODULUS_RANGE, dims)
    quantized = fl.parameters_addition(quantized, private_mask)
    for nid in sources:
        shared_key = fl.generate_shared_key(
            fl.bytes_to_private_key(client.sk1),
            fl.bytes_to_public_key(client.public_keys[nid][0]),
        )
        mask = fl.pseudo_rand_gen(shared_key, MODULUS_RANGE, dims)
        if client.nid > nid:
            quantized = fl.parameters_addition(quantized, mask)
        else:
            quantized = fl.parameters_subtraction(quantized, mask)
    return list(fl.parameters_mod(quantized, MODULUS_RANGE))


def _unmask_shares(
    client: _Client, active: list[int], dead: list[int]
) -> tuple[list[int], list[bytes]]:
    """Flower ``_unmask``: rd_seed shares of the survivors, sk1 shares of the dropped."""
    if len(active) < client.threshold:
        raise ConfigError("Flower baseline: fewer survivors than the threshold")
    shares = [client.rd_seed_shares[nid] for nid in active]
    shares += [client.sk1_shares[nid] for nid in dead]
    return active + dead, shares


def _route(
    bundles: list[tuple[int, int, bytes]], active: Sequence[int]
) -> dict[int, list[tuple[int, bytes]]]:
    """Server, share-keys stage: forward each ciphertext to its destination."""
    forward: dict[int, list[tuple[int, bytes]]] = {nid: [] for nid in active}
    for src, dst, ciphertext in bundles:
        if dst in forward:
            forward[dst].append((src, ciphertext))
    return forward


def _aggregate(masked: list[_Arrays]) -> _Arrays:
    """Server, collect-masked-vectors stage: sum the masked vectors mod the modulus."""
    fl = _flower()
    total = masked[0]
    for vec in masked[1:]:
        total = fl.parameters_addition(total, vec)
    return list(fl.parameters_mod(total, MODULUS_RANGE))


def _remove_dropped_masks(
    total: _Arrays, nid: int, sk1_pem: bytes, survivors: list[int], pk1: dict[int, bytes]
) -> _Arrays:
    """Server: regenerate a dropped client's pairwise masks with every survivor and remove them."""
    fl = _flower()
    for other in survivors:
        shared_key = fl.generate_shared_key(
            fl.bytes_to_private_key(sk1_pem), fl.bytes_to_public_key(pk1[other])
        )
        mask = fl.pseudo_rand_gen(shared_key, MODULUS_RANGE, fl.get_parameters_shape(total))
        if nid > other:
            total = fl.parameters_addition(total, mask)
        else:
            total = fl.parameters_subtraction(total, mask)
    return total


def _unmask(
    total: _Arrays,
    replies: list[tuple[list[int], list[bytes]]],
    survivors: list[int],
    pk1: dict[int, bytes],
) -> np.ndarray[Any, Any]:
    """Server, unmask stage: reconstruct the secrets, remove all masks, dequantize."""
    fl = _flower()
    collected: dict[int, list[bytes]] = {nid: [] for nid in pk1}
    for nids, shares in replies:
        for owner, share in zip(nids, shares, strict=True):
            collected[owner].append(share)
    alive = set(survivors)
    for nid, share_list in collected.items():
        secret = fl.combine_shares(share_list)
        if nid in alive:
            mask = fl.pseudo_rand_gen(secret, MODULUS_RANGE, fl.get_parameters_shape(total))
            total = fl.parameters_subtraction(total, mask)
        else:
            total = _remove_dropped_masks(total, nid, secret, survivors, pk1)
    q_total_ratio, recon = fl.factor_extract(fl.parameters_mod(total, MODULUS_RANGE))
    (vec,) = fl.dequantize(recon, CLIPPING_RANGE, QUANTIZATION_RANGE)
    vec += -(len(survivors) - 1) * CLIPPING_RANGE
    vec *= QUANTIZATION_RANGE / q_total_ratio
    return np.asarray(vec)


def _default_inputs(n_clients: int, dim: int) -> list[np.ndarray[Any, Any]]:
    """Deterministic inputs in (-4, 4): no randomness needed for a timing baseline."""
    j = np.arange(dim, dtype=np.float64)
    return [4.0 * np.sin(0.001 * j + 0.7 * i) for i in range(n_clients)]


def _check_args(
    n_clients: int, dim: int, dropouts: int, threshold: int, inputs: list[np.ndarray[Any, Any]]
) -> None:
    problems = []
    if not 2 <= n_clients < MODULUS_RANGE // QUANTIZATION_RANGE:
        problems.append(f"n_clients must be in [2, {MODULUS_RANGE // QUANTIZATION_RANGE - 1}]")
    if dim < 1:
        problems.append("dim must be >= 1")
    if not 2 <= threshold <= n_clients - dropouts or dropouts < 0:
        problems.append("need 0 <= dropouts and 2 <= threshold <= n_clients - dropouts")
    if len(inputs) != n_clients or any(np.shape(x) != (dim,) for x in inputs):
        problems.append("inputs must be n_clients float vectors of length dim")
    elif any(not np.all(np.abs(x) <= CLIPPING_RANGE) for x in inputs):
        problems.append(f"inputs must be finite and within +-{CLIPPING_RANGE} (Flower clips)")
    if problems:
        raise ConfigError("; ".join(problems))


def _timed(client: _Client, fn: Any, *args: Any) -> Any:
    """Run one client phase and add its duration to the client's time."""
    start = time.perf_counter()
    result = fn(client, *args)
    client.elapsed += time.perf_counter() - start
    return result


def run_flower_round(
    *,
    n_clients: int,
    dim: int,
    dropouts: int,
    inputs: list[np.ndarray] | None = None,
    threshold: int | None = None,
) -> FlowerBaselineResult:
    """Run and time one Flower SecAgg+ round on the complete graph (see the module docstring).

    ``inputs`` (default: a fixed pattern in (-4, 4)) must lie within +-``CLIPPING_RANGE``;
    ``threshold`` defaults to floor(2N/3) + 1. Raises ConfigError on invalid arguments or when
    flwr is not installed.
    """
    if not flower_available():  # checked on every call: _flower() is cached
        raise ConfigError(_INSTALL_HINT)
    version = str(_flower().__version__)
    t = n_clients * 2 // 3 + 1 if threshold is None else threshold
    xs = (
        _default_inputs(n_clients, dim)
        if inputs is None
        else [np.asarray(x, dtype=np.float64) for x in inputs]
    )
    _check_args(n_clients, dim, dropouts, t, xs)
    clients = [_Client(nid=i + 1, threshold=t, share_num=n_clients) for i in range(n_clients)]
    alive, n_alive = clients[: n_clients - dropouts], n_clients - dropouts
    survivors, dead = [c.nid for c in alive], [c.nid for c in clients[n_alive:]]

    public_keys = {c.nid: _timed(c, _setup) for c in clients}
    bundles = [b for c in clients for b in _timed(c, _share_keys, dict(public_keys))]
    start = time.perf_counter()
    forward = _route(bundles, list(public_keys))
    server_s = time.perf_counter() - start
    masked = [
        _timed(c, _masked_input, _timed(c, _receive_shares, forward[c.nid]), xs[c.nid - 1])
        for c in alive
    ]
    replies = [_timed(c, _unmask_shares, survivors, dead) for c in alive]
    pk1 = {nid: pair[0] for nid, pair in public_keys.items()}
    start = time.perf_counter()
    mean = _unmask(_aggregate(masked), replies, survivors, pk1)
    server_s += time.perf_counter() - start

    plain = np.sum([xs[nid - 1] for nid in survivors], axis=0)
    tolerance = 2 * CLIPPING_RANGE / QUANTIZATION_RANGE * n_alive * 1.001  # one step per term
    return FlowerBaselineResult(
        flower_version=version,
        n_clients=n_clients,
        dim=dim,
        dropouts=dropouts,
        total_s=sum(c.elapsed for c in clients) + server_s,
        client_s=statistics.median(c.elapsed for c in alive),
        server_s=server_s,
        correct=bool(np.all(np.abs(mean * n_alive - plain) <= tolerance)),
    )
