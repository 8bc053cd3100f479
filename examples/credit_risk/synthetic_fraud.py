"""SYNTHETIC card-fraud data for many banks: strong class imbalance, segment-specific patterns.

**Every number produced from this data is synthetic** -- it says how the methods behave on a
made-up problem with a known structure, nothing about real fraud. The data set is named
``SYNTHETIC-fraud`` everywhere it appears (``banks.json``, ``federation.json``, the tables).

Why it exists: the real credit files are small (1,000 and 6,000 rows) and moderately imbalanced
(22-30% bad). Fraud detection is the opposite regime -- many institutions, 1-5% positives --
and, unlike credit scoring, it is *not* a high-risk use under the EU AI Act (Annex III 5(b)
excludes fraud detection). This generator provides that regime, seeded and reproducible.

The model of the data (all drawn from ``numpy.random.default_rng(seed)``; a data simulation,
never keys, masks or DP noise):

* ``segments`` segments of ``banks_per_segment`` banks each: ``card-present retail``,
  ``e-commerce``, ``cross-border travel`` (and more, generically named, if asked);
* per transaction 11 features: log amount, hour of day (sine and cosine), card present,
  cross-border, new device, log account age (days), transactions in the last 24 h, and a
  4-way merchant category (one-hot);
* fraud follows a logistic model whose weights are **partly shared and partly specific to the
  segment** (concept shift: in e-commerce a new device at night is the signal, in card-present
  retail large amounts at high velocity, in cross-border travel foreign use of young accounts);
  each bank's intercept is set so that its fraud rate is near its segment's base rate
  (2%, 3%, 5%, ...), jittered per bank;
* each bank gets ``rows`` transactions, split 75/25 into train and test (stratified), with its
  numeric columns standardised with its own training statistics, as in ``prepare.py``.

Usage::

    .venv/bin/python examples/credit_risk/synthetic_fraud.py --out DIR [--seed 0]
    .venv/bin/python examples/credit_risk/run.py --datasets synthetic-fraud --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from securefed.data import (
    METADATA_FILE,
    FederationMetadata,
    Scheme,
    TenantData,
    load_federation_metadata,
    write_tenants,
)

__all__ = ["NAME", "SyntheticBank", "generate"]

NAME = "SYNTHETIC-fraud"
TEST_FRACTION = 0.25
SEGMENT_NAMES = ("card-present retail", "e-commerce", "cross-border travel")
BASE_RATES = (0.02, 0.03, 0.05)
FEATURES = (
    "log_amount",
    "hour_sin",
    "hour_cos",
    "card_present",
    "cross_border",
    "new_device",
    "log_account_age_days",
    "transactions_24h",
    "merchant=grocery",
    "merchant=electronics",
    "merchant=travel",
    "merchant=digital",
)
NUMERIC = 8  # the first NUMERIC features are standardised per bank; the rest are one-hot


@dataclass(frozen=True)
class SyntheticBank:
    index: int
    segment: int
    segment_name: str
    tenant: TenantData
    fraud_rate: float


def _transactions(
    rng: np.random.Generator,  # noqa: TID251 -- simulated data only
    n: int,
    segment: int,
) -> npt.NDArray[np.float64]:
    """Raw features of n transactions in ``segment`` (its channel mix differs)."""
    card_present_share = (0.85, 0.05, 0.4)[segment % 3]
    cross_border_share = (0.03, 0.1, 0.6)[segment % 3]
    hours = rng.integers(0, 24, n)
    x = np.zeros((n, len(FEATURES)))
    x[:, 0] = rng.normal(3.5 + 0.3 * (segment % 3), 1.0, n)
    x[:, 1] = np.sin(2 * np.pi * hours / 24)
    x[:, 2] = np.cos(2 * np.pi * hours / 24)
    x[:, 3] = rng.random(n) < card_present_share
    x[:, 4] = rng.random(n) < cross_border_share
    x[:, 5] = rng.random(n) < 0.08
    x[:, 6] = rng.normal(6.5, 1.2, n)
    x[:, 7] = rng.poisson(2.0, n)
    merchant_mix = np.roll(np.array([0.4, 0.3, 0.2, 0.1]), segment)
    x[np.arange(n), 8 + rng.choice(4, n, p=merchant_mix)] = 1.0
    return x


def _fraud_logits(x: npt.NDArray[np.float64], segment: int) -> npt.NDArray[np.float64]:
    """Shared signal plus the segment's own pattern (without the intercept)."""
    night = (x[:, 2] > 0.7).astype(np.float64)  # roughly 22:00-02:00
    shared = 0.6 * (x[:, 0] - 3.5) + 0.5 * (x[:, 7] - 2.0) - 0.4 * (x[:, 6] - 6.5)
    specific = (
        1.2 * x[:, 0] * (x[:, 7] > 3) + 0.8 * x[:, 9],  # retail: big, fast, electronics
        2.0 * x[:, 5] + 1.5 * night + 1.0 * x[:, 11],  # e-commerce: new device, night, digital
        1.8 * x[:, 4] * (x[:, 6] < 6.0) + 1.0 * x[:, 10],  # travel: abroad on a young account
    )[segment % 3]
    return shared + specific


def _intercept(logits: npt.NDArray[np.float64], rate: float) -> float:
    """The intercept b with mean(sigmoid(logits + b)) = rate (bisection)."""
    low, high = -30.0, 30.0
    for _ in range(80):
        mid = (low + high) / 2
        if float(np.mean(1 / (1 + np.exp(-(logits + mid))))) > rate:
            high = mid
        else:
            low = mid
    return (low + high) / 2


def generate(
    out: Path,
    *,
    seed: int = 0,
    segments: int = 3,
    banks_per_segment: int = 4,
    rows: int = 3000,
    overwrite: bool = False,
) -> list[SyntheticBank]:
    """Write the SYNTHETIC federation into ``out`` (seed layout, ``federation.json``,
    ``banks.json``); return its banks."""
    if segments < 1 or banks_per_segment < 3:
        raise ValueError("need >= 1 segment and >= 3 banks per segment (group mode's minimum)")
    rng = np.random.default_rng(seed)  # noqa: TID251 -- simulated data only, never keys
    banks: list[SyntheticBank] = []
    for segment in range(segments):
        name = SEGMENT_NAMES[segment] if segment < len(SEGMENT_NAMES) else f"segment {segment}"
        base = BASE_RATES[segment % len(BASE_RATES)]
        for _ in range(banks_per_segment):
            rate = float(np.clip(base * rng.lognormal(0.0, 0.25), 0.003, 0.2))
            x = _transactions(rng, rows, segment)
            logits = _fraud_logits(x, segment)
            p = 1 / (1 + np.exp(-(logits + _intercept(logits, rate))))
            y = (rng.random(rows) < p).astype(np.int64)
            test = np.zeros(rows, dtype=bool)
            for label in (0, 1):
                mine = rng.permutation(np.flatnonzero(y == label))
                test[mine[: round(TEST_FRACTION * len(mine))]] = True
            train_x, test_x = x[~test].copy(), x[test].copy()
            mean = train_x[:, :NUMERIC].mean(axis=0)
            std = train_x[:, :NUMERIC].std(axis=0)
            std[std < 1e-12] = 1.0
            train_x[:, :NUMERIC] = (train_x[:, :NUMERIC] - mean) / std
            test_x[:, :NUMERIC] = (test_x[:, :NUMERIC] - mean) / std
            index = len(banks)
            tenant = TenantData(
                index,
                train_x.astype(np.float32),
                y[~test],
                test_x.astype(np.float32),
                y[test],
            )
            banks.append(SyntheticBank(index, segment, name, tenant, float(y.mean())))
    for target in (out / METADATA_FILE, out / "banks.json"):
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} exists")
    write_tenants(out, [b.tenant for b in banks], overwrite=overwrite)
    metadata = FederationMetadata(
        scheme=Scheme.DOMINANT_CLASS,
        seed=seed,
        tenants=len(banks),
        groups=segments,
        group_of_tenant=MappingProxyType({b.index: b.segment for b in banks}),
        permutations=tuple((0, 1) for _ in range(segments)),
        dominant_classes=(),
        num_classes=2,
        test_fraction=TEST_FRACTION,
        dominant_share=0.0,
        samples_per_tenant=rows,
        classes_per_tenant=2,
        source_kind="synthetic",
        source_name=f"{NAME} (examples/credit_risk/synthetic_fraud.py, seed {seed})",
        source_sha256="",
        sizes=MappingProxyType(
            {b.index: (len(b.tenant.train_y), len(b.tenant.test_y)) for b in banks}
        ),
    )
    document = metadata.to_json()
    document["note"] = f"{NAME}: SYNTHETIC data; scheme and permutations are format placeholders"
    document["segment_names"] = [b.segment_name for b in banks[::banks_per_segment]]
    (out / METADATA_FILE).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    summary = {
        "dataset": NAME,
        "synthetic": True,
        "source": f"examples/credit_risk/synthetic_fraud.py, seed {seed}",
        "label": "1 = fraud, 0 = genuine (SYNTHETIC)",
        "test_fraction": TEST_FRACTION,
        "features": list(FEATURES),
        "standardised_per_bank": list(FEATURES[:NUMERIC]),
        "banks": [
            {
                "tenant": b.index,
                "party": f"bank-{b.index}",
                "segment": b.segment,
                "segment_name": b.segment_name,
                "train": len(b.tenant.train_y),
                "test": len(b.tenant.test_y),
                "train_default_rate": float(b.tenant.train_y.mean()),
                "test_default_rate": float(b.tenant.test_y.mean()),
                "test_defaults": int(b.tenant.test_y.sum()),
            }
            for b in banks
        ],
    }
    (out / "banks.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if load_federation_metadata(out) is None:
        raise RuntimeError(f"{out / METADATA_FILE} was not written")
    return banks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--segments", type=int, default=3)
    parser.add_argument("--banks-per-segment", type=int, default=4)
    parser.add_argument("--rows", type=int, default=3000, help="transactions per bank")
    args = parser.parse_args(argv)
    banks = generate(
        args.out,
        seed=args.seed,
        segments=args.segments,
        banks_per_segment=args.banks_per_segment,
        rows=args.rows,
    )
    for b in banks:
        print(
            f"{NAME} bank-{b.index} [{b.segment_name}]: fraud rate {b.fraud_rate:.2%}, "
            f"train {len(b.tenant.train_y)}, test {len(b.tenant.test_y)} "
            f"({int(b.tenant.test_y.sum())} frauds)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
