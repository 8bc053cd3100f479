"""`securefed data import` and `securefed bench import` on the command line (docs/tabular.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from securefed.cli import main
from securefed.data import load_tenants
from securefed.data.tabular_store import read_schema_digest
from tests.data.test_tabular import CSV_CASES, ROWS, SCHEMA, csv_text, write


def test_data_import_prints_the_digest_and_exits_2_on_bad_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    schema_path = tmp_path / "schema.toml"
    write(schema_path, SCHEMA)
    good = write(inputs / "good.csv", csv_text(ROWS))
    out = tmp_path / "prepared"
    argv = ["data", "import", "--schema", str(schema_path), "--out", str(out)]
    assert main([*argv, "--input", str(good), "--institution", "2"]) == 0
    printed = capsys.readouterr().out
    assert "institution 2: 8 rows from 1 file -> 6 train / 2 test, 10 features" in printed
    assert read_schema_digest(out, 2) in printed
    bad = write(inputs / "bad.csv", CSV_CASES["unknown category"][0])
    assert main([*argv, "--input", str(bad), "--institution", "3"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: row 4, column 'housing': category 'castle'" in err
    assert [t.index for t in load_tenants(out)] == [2]


def test_bench_import_prints_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "import", "--rows", "2000", "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["rows"] == 2000
    assert result["columns"] == 30
    for key in ("import_s", "pyarrow_read_s", "ratio", "target_met"):
        assert key in result
    assert result["import_s"] > 0
    assert result["pyarrow_read_s"] > 0
    assert "bench import" in err
