"""SYNTHETIC card-fraud transactions for 12 banks at a 1% fraud rate, as CSV files + a schema.

**Every number produced from this data is synthetic** -- it says how the methods behave on a
made-up problem with a known structure, nothing about real fraud. The data set is called
``SYNTHETIC-fraud`` everywhere it appears (the schema's title, ``banks.json``, the tables).

Why it exists: no package that the install can reach ships a real fraud data set (the README
lists what was checked); the real credit files are moderately imbalanced (22-30% bad). Fraud
detection is the strongly imbalanced regime -- here 1% positives -- in which plain
cross-entropy learns mostly "no fraud", class weights matter and PR-AUC, not ROC-AUC, is the
number to read. (Unlike credit scoring, fraud detection is also not a high-risk use under the
EU AI Act: Annex III 5(b) excludes it.)

The model of the data (all drawn from ``numpy.random.default_rng(seed)``; a data simulation,
never keys, masks or DP noise):

* ``segments`` segments of ``banks_per_segment`` banks each: ``card-present retail``,
  ``e-commerce``, ``cross-border travel`` (and more, generically named, if asked);
* per transaction: amount, hour of day, a night flag (22:00-05:59), card present,
  cross-border, new device, account age in days, the card's transactions in the last 24 h, and
  a 4-way merchant category -- raw values, as a bank's export would hold them;
* fraud follows a logistic model whose weights are **partly shared and partly specific to the
  segment** (in e-commerce a new device at night is the signal, in card-present retail large
  amounts at high velocity, in cross-border travel foreign use of young accounts); each bank's
  intercept is set so that its expected fraud rate is ``fraud_rate`` (default 1%);
* each bank gets ``rows`` transactions; its CSV is imported with ``securefed data import``
  like the real banks' (the schema's ``[split]`` holds out 25% for test).

Usage::

    .venv/bin/python examples/credit_risk/synthetic_fraud.py --out DIR [--seed 0]
    .venv/bin/python examples/credit_risk/run.py --datasets synthetic-fraud --out DIR
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))

import prepare  # the example's own module, next to this file

__all__ = [
    "COLUMNS",
    "FRAUD_RATE",
    "ID_COLUMN",
    "NAME",
    "TARGET",
    "bank_tables",
    "generate",
    "schema",
]

NAME = "SYNTHETIC-fraud"
FRAUD_RATE = 0.01
SEGMENT_NAMES = ("card-present retail", "e-commerce", "cross-border travel")
MERCHANTS = ("grocery", "electronics", "travel", "digital")
COLUMNS = (
    prepare.Column(
        "amount",
        "numeric",
        range=(0, 1000),
        note="Transaction amount (SYNTHETIC); larger amounts count as 1000 in the statistics.",
    ),
    prepare.Column("hour", "numeric", range=(0, 23), note="Hour of day, 0..23."),
    prepare.Column("night", "binary", note="1 between 22:00 and 05:59."),
    prepare.Column("card_present", "binary"),
    prepare.Column("cross_border", "binary"),
    prepare.Column("new_device", "binary", note="First use of this device on the account."),
    prepare.Column("account_age_days", "numeric", range=(0, 3650)),
    prepare.Column(
        "transactions_24h", "numeric", range=(0, 20), note="The card's transactions in 24 h."
    ),
    prepare.Column("merchant_category", "categorical", MERCHANTS),
)
TITLE = (
    "SYNTHETIC-fraud: made-up card transactions (examples/credit_risk/synthetic_fraud.py),\n"
    "NOT real data. One row per transaction; fraud = 1 for a fraudulent one (about 1%)."
)
TARGET = "fraud"
ID_COLUMN = "transaction_id"
TARGET_NOTE = "1 = fraud, 0 = genuine (SYNTHETIC labels)."


def schema() -> str:
    """The SYNTHETIC data set's schema.toml."""
    return prepare.schema_toml(
        COLUMNS,
        title=TITLE,
        target_note=TARGET_NOTE,
        target=TARGET,
        drop=(ID_COLUMN,),
        writer="synthetic_fraud.py",
    )


def _transactions(
    rng: np.random.Generator,  # noqa: TID251 -- simulated data only
    n: int,
    segment: int,
) -> dict[str, npt.NDArray[np.float64]]:
    """Raw columns of n transactions in ``segment`` (its channel mix differs)."""
    card_present_share = (0.85, 0.05, 0.4)[segment % 3]
    cross_border_share = (0.03, 0.1, 0.6)[segment % 3]
    hour = rng.integers(0, 24, n).astype(np.float64)
    merchant_mix = np.roll(np.array([0.4, 0.3, 0.2, 0.1]), segment)
    return {
        "log_amount": rng.normal(3.5 + 0.3 * (segment % 3), 1.0, n),
        "hour": hour,
        "night": ((hour >= 22) | (hour < 6)).astype(np.float64),
        "card_present": (rng.random(n) < card_present_share).astype(np.float64),
        "cross_border": (rng.random(n) < cross_border_share).astype(np.float64),
        "new_device": (rng.random(n) < 0.08).astype(np.float64),
        "log_account_age": rng.normal(6.5, 1.2, n),
        "transactions_24h": rng.poisson(2.0, n).astype(np.float64),
        "merchant": rng.choice(len(MERCHANTS), n, p=merchant_mix).astype(np.float64),
    }


def _fraud_logits(x: dict[str, npt.NDArray[np.float64]], segment: int) -> npt.NDArray[np.float64]:
    """Shared signal plus the segment's own pattern (without the intercept)."""
    shared = (
        0.6 * (x["log_amount"] - 3.5)
        + 0.5 * (x["transactions_24h"] - 2.0)
        - 0.4 * (x["log_account_age"] - 6.5)
    )
    merchant = x["merchant"]
    specific = (
        # retail: big and fast, electronics
        1.2 * x["log_amount"] * (x["transactions_24h"] > 3) + 0.8 * (merchant == 1),
        # e-commerce: new device, night, digital goods
        2.0 * x["new_device"] + 1.5 * x["night"] + 1.0 * (merchant == 3),
        # travel: abroad on a young account, travel merchants
        1.8 * x["cross_border"] * (x["log_account_age"] < 6.0) + 1.0 * (merchant == 2),
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


def bank_tables(
    *,
    seed: int = 0,
    segments: int = 3,
    banks_per_segment: int = 4,
    rows: int = 4000,
    fraud_rate: float = FRAUD_RATE,
) -> list[prepare.BankTable]:
    """The SYNTHETIC banks' tables (rows as their CSVs hold them), seeded."""
    if segments < 1 or banks_per_segment < 3:
        raise ValueError("need >= 1 segment and >= 3 banks per segment (group mode's minimum)")
    if not 0.0 < fraud_rate < 0.5:
        raise ValueError(f"fraud_rate must be in (0, 0.5), got {fraud_rate}")
    rng = np.random.default_rng(seed)  # noqa: TID251 -- simulated data only, never keys
    banks: list[prepare.BankTable] = []
    transaction = 0
    for segment in range(segments):
        name = SEGMENT_NAMES[segment] if segment < len(SEGMENT_NAMES) else f"segment {segment}"
        for _ in range(banks_per_segment):
            x = _transactions(rng, rows, segment)
            logits = _fraud_logits(x, segment)
            p = 1 / (1 + np.exp(-(logits + _intercept(logits, fraud_rate))))
            fraud = rng.random(rows) < p
            table = []
            for r in range(rows):
                transaction += 1
                table.append(
                    {
                        ID_COLUMN: f"T{transaction:07d}",
                        "amount": f"{np.exp(x['log_amount'][r]):.2f}",
                        "hour": str(int(x["hour"][r])),
                        "night": str(int(x["night"][r])),
                        "card_present": str(int(x["card_present"][r])),
                        "cross_border": str(int(x["cross_border"][r])),
                        "new_device": str(int(x["new_device"][r])),
                        "account_age_days": str(int(np.exp(x["log_account_age"][r]))),
                        "transactions_24h": str(int(x["transactions_24h"][r])),
                        "merchant_category": MERCHANTS[int(x["merchant"][r])],
                        TARGET: "1" if fraud[r] else "0",
                    }
                )
            banks.append(
                prepare.BankTable(len(banks), segment, name, tuple(table), TARGET, ID_COLUMN)
            )
    return banks


def generate(
    out: Path,
    *,
    seed: int = 0,
    segments: int = 3,
    banks_per_segment: int = 4,
    rows: int = 4000,
    fraud_rate: float = FRAUD_RATE,
    importer: Callable[[Path, Path, Path, int], object] | None = None,
) -> prepare.Prepared:
    """Write the SYNTHETIC federation into ``out`` -- ``schema.toml``, ``csv/bank-<i>.csv``,
    ``prepared/`` (imported with ``securefed data import``) and ``banks.json``."""
    banks = bank_tables(
        seed=seed,
        segments=segments,
        banks_per_segment=banks_per_segment,
        rows=rows,
        fraud_rate=fraud_rate,
    )
    summary = {
        "dataset": NAME,
        "synthetic": True,
        "source": f"examples/credit_risk/synthetic_fraud.py, seed {seed} (SYNTHETIC)",
        "seed": seed,
        "fraud_rate": fraud_rate,
        "label": f"{TARGET}: 1 = fraud, 0 = genuine (SYNTHETIC)",
    }
    return prepare.write_federation(
        out,
        schema_text=schema(),
        columns=COLUMNS,
        banks=banks,
        summary=summary,
        importer=importer,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="directory to write (required)")
    parser.add_argument("--schema-only", action="store_true", help="print schema.toml and stop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--segments", type=int, default=3)
    parser.add_argument("--banks-per-segment", type=int, default=4)
    parser.add_argument("--rows", type=int, default=4000, help="transactions per bank")
    args = parser.parse_args(argv)
    if args.schema_only:
        sys.stdout.write(schema())
        return 0
    if args.out is None:
        parser.error("--out is required")
    prepared = generate(
        args.out,
        seed=args.seed,
        segments=args.segments,
        banks_per_segment=args.banks_per_segment,
        rows=args.rows,
    )
    for b in prepared.banks:
        print(
            f"{NAME} {b['party']} [{b['segment_name']}]: {b['rows']} transactions, "
            f"{b['positives']} SYNTHETIC frauds, train {b['train']} / test {b['test']} "
            f"({b['test_positives']} frauds in test)"
        )
    print(f"-> {prepared.prepared} (schema sha256 {prepared.schema_sha256})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
