"""Before anything trains, the institutions' imported tables must line up: one schema digest for
all of them, and the one the run configuration pins (``data.schema_sha256``) when it does (issue
22 item 1; docs/tabular.md)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from securefed.data.schema import load_schema
from securefed.data.tabular import import_tabular
from securefed.data.tabular_store import SchemaMismatch, check_schemas, record_file
from securefed.errors import ConfigError
from securefed.runtime.config import parse_run_config
from securefed.runtime.federated import run_federation

SCHEMA = """\
target = "default"

[[column]]
name = "age"
type = "numeric"

[[column]]
name = "housing"
type = "categorical"
categories = [{categories}]

[[column]]
name = "default"
type = "binary"
"""
OWN_RENT = '"own", "rent"'
OWN_RENT_FREE = '"own", "rent", "free"'


def _import(root: Path, bank: int, categories: str, out: Path) -> str:
    """Bank ``bank``'s seeded table imported into ``out`` under the schema with
    ``categories``; its schema digest."""
    schema_path = root / f"schema-{bank}-{len(categories)}.toml"
    schema_path.write_text(SCHEMA.format(categories=categories), encoding="utf-8")
    rng = np.random.default_rng(bank)
    path = root / f"bank{bank}.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["age", "housing", "default"])
        for _ in range(60):
            label = int(rng.random() < 0.3)
            writer.writerow([f"{rng.normal(label, 1.0):.4f}", rng.choice(["own", "rent"]), label])
    record = import_tabular(load_schema(schema_path), [path], out=out, institution=bank)
    return record.schema_sha256


@pytest.fixture
def same(tmp_path: Path) -> tuple[Path, str]:
    out = tmp_path / "prepared"
    digests = {_import(tmp_path, bank, OWN_RENT, out) for bank in range(3)}
    (digest,) = digests
    return out, digest


def test_tables_under_one_schema_line_up(same: tuple[Path, str]) -> None:
    out, digest = same
    assert check_schemas(out, [0, 1, 2], pinned=None) == dict.fromkeys(range(3), digest)
    assert check_schemas(out, [0, 1, 2], pinned=digest) == dict.fromkeys(range(3), digest)


def test_a_table_under_another_schema_is_refused(tmp_path: Path) -> None:
    """Bank 2 declared one more category: its feature columns do not line up. (Imports into
    one directory already refuse this; records assembled by hand are caught here.)"""
    out = tmp_path / "prepared"
    for bank in range(2):
        _import(tmp_path, bank, OWN_RENT, out)
    elsewhere = tmp_path / "elsewhere"
    _import(tmp_path, 2, OWN_RENT_FREE, elsewhere)
    for part in elsewhere.iterdir():
        shutil.copy(part, out / part.name)
    with pytest.raises(SchemaMismatch, match=r"different schemas .*\[0, 1\].*\[2\]"):
        check_schemas(out, [0, 1, 2], pinned=None)


def test_a_pinned_digest_must_match_every_table(same: tuple[Path, str]) -> None:
    out, digest = same
    other = "0" * 64
    with pytest.raises(SchemaMismatch, match="another schema than the pinned"):
        check_schemas(out, [0, 1, 2], pinned=other)
    record_file(out, 1).unlink()
    with pytest.raises(SchemaMismatch, match=r"institutions \[1\] .* no import record"):
        check_schemas(out, [0, 1, 2], pinned=digest)
    with pytest.raises(SchemaMismatch, match="while the others do"):
        check_schemas(out, [0, 1, 2], pinned=None)


def test_a_run_with_a_wrong_pinned_digest_refuses_before_anything_trains(
    same: tuple[Path, str], tmp_path: Path
) -> None:
    out, digest = same

    def config(pinned: str) -> object:
        return parse_run_config(
            {
                "mode": "fedavg",
                "rounds": 1,
                "seed": 0,
                "data": {"directory": str(out), "model": "logistic", "schema_sha256": pinned},
                "training": {"lr": 0.5, "batch_size": 16},
            }
        )

    with pytest.raises(SchemaMismatch):
        run_federation(config("f" * 64), tmp_path / "refused")  # type: ignore[arg-type]
    assert not (tmp_path / "refused").exists()
    assert not (tmp_path / "refused.partial").exists()
    summary = run_federation(config(digest), tmp_path / "run")  # type: ignore[arg-type]
    assert summary.metrics["status"] == "completed"


@pytest.mark.parametrize("bad", ["abc", "A" * 64, "g" * 64, 64 * "0" + "0"])
def test_the_pinned_digest_is_64_lowercase_hex(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"data\.schema_sha256"):
        parse_run_config({"mode": "fedavg", "data": {"schema_sha256": bad}})
