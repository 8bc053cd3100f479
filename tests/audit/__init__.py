"""Tests of securefed.audit, and the synthetic run directory they share (:func:`build_run`)."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from securefed.audit import (
    BudgetConfigured,
    Hazard,
    Ledger,
    RoundSpend,
    RoundSurvivors,
    RunConfigured,
    RunFinished,
    Unmask,
    UpdateReleased,
    ledger_path,
    record_final_checkpoint,
)
from securefed.audit.ledger import Clock
from securefed.crypto import SigningKey
from securefed.secagg.roster import save_roster
from securefed.testing import Federation, make_federation

START = datetime(2025, 1, 1, tzinfo=UTC)


def fixed_clock() -> Clock:
    """A clock that ticks one second per call, from 2025-01-01T00:00:00Z."""
    ticks = itertools.count()
    return lambda: START + timedelta(seconds=next(ticks))


@dataclass(frozen=True)
class Run:
    """A synthetic run directory with the private keys of its parties."""

    run_dir: Path
    federation: Federation
    keys: dict[str, SigningKey]

    @property
    def clients(self) -> list[str]:
        return [c.party_id for c in self.federation.roster.clients]

    def path(self, actor: str) -> Path:
        return ledger_path(self.run_dir, actor)

    def lines(self, actor: str) -> list[bytes]:
        return self.path(actor).read_bytes().splitlines(keepends=True)

    def write_lines(self, actor: str, lines: list[bytes]) -> None:
        self.path(actor).write_bytes(b"".join(lines))


def run_configured(
    federation: Federation, fingerprints: dict[str, str], config_sha256: str
) -> RunConfigured:
    """The ``run.configured`` event of a test run (FedAvg, the default suite)."""
    return RunConfigured(
        config_sha256=config_sha256,
        software_version="0.1.0",
        cipher_suite="default",
        roster_digest=federation.roster.digest().hex(),
        roster_fingerprints=fingerprints,
        mode="fedavg",
    )


def open_ledgers(run: Run) -> dict[str, Ledger]:
    return {
        actor: Ledger.open(run.path(actor), actor, key, clock=fixed_clock())
        for actor, key in run.keys.items()
    }


def build_run(
    root: Path, *, clients: int = 3, rounds: int = 4, final: bool = True, hazard: str = ""
) -> Run:
    """A run directory: roster.toml and one ledger per party (server ``server``, clients
    ``bank-<i>``) with configuration, budgets, ``rounds`` rounds of spends, releases, survivors
    and unmasks (client 2 drops out of round 2), optionally a hazard, and a final checkpoint."""
    federation = make_federation(clients)
    run_dir = root / "run"
    run_dir.mkdir(parents=True)
    save_roster(federation.roster, run_dir / "roster.toml")
    keys = {"server": federation.server_key}
    keys.update({f"bank-{i}": key for i, key in enumerate(federation.client_keys)})
    run = Run(run_dir, federation, keys)
    ledgers = open_ledgers(run)
    fingerprints = {actor: key.verify_key().fingerprint().hex() for actor, key in keys.items()}
    for ledger in ledgers.values():
        ledger.record(run_configured(federation, fingerprints, "ab" * 32))
    for i in range(clients):
        ledgers[f"bank-{i}"].record(
            BudgetConfigured(
                target_epsilon=8.0,
                delta=1e-5,
                accountant="rdp",
                accountant_version="opacus-1.5",
                noise_multiplier=1.1,
                max_grad_norm=1.0,
                sample_rate=0.01,
            )
        )
    for r in range(1, rounds + 1):
        survivors = [i for i in range(clients) if not (r == 2 and i == 2)]
        for i in survivors:
            ledgers[f"bank-{i}"].record(
                RoundSpend(
                    round=r,
                    epsilon=round(0.5 * r * (1 + 0.25 * i), 6),
                    delta=1e-5,
                    noise_multiplier=1.1,
                    sample_rate=0.01,
                    steps=100,
                    accountant="rdp",
                    accountant_version="opacus-1.5",
                )
            )
            ledgers[f"bank-{i}"].record(
                UpdateReleased(round=r, targets=1, vector_length=1000, masked_sha256="cd" * 32)
            )
        dropouts = tuple(i for i in range(clients) if i not in survivors)
        ledgers["server"].record(
            RoundSurvivors(round=r, survivors=tuple(survivors), dropouts=dropouts)
        )
        ledgers["server"].record(
            Unmask(
                round=r,
                outputs=1,
                target_blinded=False,
                self_seeds_of=tuple(survivors),
                mask_keys_of=dropouts,
            )
        )
    if hazard:
        ledgers["server"].record(Hazard(text=hazard))
    for ledger in ledgers.values():
        ledger.record(RunFinished(rounds=rounds, status="completed"))
    if final:
        record_final_checkpoint(ledgers.values())
    for ledger in ledgers.values():
        ledger.close()
    return run


DOCUMENTED_HAZARD = "unencrypted identity keys (--unsafe-plaintext): test run only"


def documented_metrics(clients: int, rounds: int) -> dict[str, object]:
    """A ``metrics.json`` shaped as the runtime writes it, with synthetic numbers."""
    parties = [f"bank-{i}" for i in range(clients)]
    return {
        "mode": "fedavg",
        "rounds": rounds,
        "secure": True,
        "dp": {
            "target_epsilon": 8.0,
            "delta": 1e-5,
            "noise_multiplier": 1.1,
            "max_grad_norm": 1.0,
            "sample_rate": 0.01,
            "accountant": "rdp",
            "accountant_version": "opacus-1.5",
            "by_client": {
                party: {"noise_multiplier": 1.1, "sample_rate": 0.01, "steps_per_round": 100}
                for party in parties
            },
        },
        "history": [
            {"round": r, "mean_test_accuracy": round(0.6 + 0.05 * r, 4), "max_epsilon": 0.75 * r}
            for r in range(rounds + 1)
        ],
        "baselines": {"local": {"mean_test_accuracy": 0.71}},
        "clients": [
            {
                "id": party,
                "test_accuracy": round(0.8 - 0.01 * i, 4),
                "epsilon": 0.5 * rounds * (1 + 0.25 * i),
                "delta": 1e-5,
            }
            for i, party in enumerate(parties)
        ],
        "mean_test_accuracy": 0.79,
        "config_sha256": "ab" * 32,
    }


DOCUMENTED_CANARY = {
    "method": "one-run canary audit (Steinke, Nasr, Jagielski, NeurIPS 2023)",
    "epsilon_lower_bound": 0.42,
    "confidence": 0.95,
    "claimed_epsilon": 2.5,
    "delta": 1e-5,
    "canaries": 1000,
    "guesses": 100,
    "correct": 68,
    "configuration": "synthetic example",
    "note": "a lower bound on epsilon, not an estimate of it",
}


def build_documented_run(root: Path) -> Run:
    """The fixture run whose report docs/audit.md shows: :func:`build_run` (3 clients, 4 rounds,
    client 2 drops out of round 2, a hazard) plus ``metrics.json`` and ``canary.json`` with
    synthetic numbers. Everything but keys, hashes and signatures is deterministic."""
    run = build_run(root, hazard=DOCUMENTED_HAZARD)
    metrics = documented_metrics(len(run.clients), 4)
    (run.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    canary = json.dumps(DOCUMENTED_CANARY, indent=2)
    (run.run_dir / "canary.json").write_text(canary, encoding="utf-8")
    return run
