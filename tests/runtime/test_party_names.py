"""``[data] parties``: the institutions' party ids come from the run configuration and appear in
the roster, every ledger, ``metrics.json``, the spend records, the audit report, ``securefed
run``'s summary and ``securefed predict --institution``; invalid lists are refused naming the
key, before anything is written."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from securefed.audit.verify import verify_run
from securefed.cli import main
from securefed.data import TenantData, write_tenants
from securefed.errors import ConfigError
from securefed.runtime.config import DataConfig, RunConfig, parse_run_config
from securefed.runtime.federated import run_federation
from securefed.runtime.flower.deployment import check_deployable
from securefed.secagg.roster import load_roster
from tests.runtime.test_scoring import HEADER, ROWS, SCHEMA, _rows, _write_csv

NAMES = ["acme-bank", "northwind.credit", "Union_3"]


def test_a_run_names_its_institutions_as_configured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = tmp_path / "schema.toml"
    schema.write_text(SCHEMA.format(target="default"), encoding="utf-8")
    prepared = tmp_path / "prepared"
    files = {}
    for bank in range(3):
        header = [*HEADER, "default", "grade"]
        files[bank] = _write_csv(tmp_path / f"{bank}.csv", _rows(bank), header)
        argv = ["data", "import", "--schema", str(schema), "--input", str(files[bank])]
        assert main([*argv, "--out", str(prepared), "--institution", str(bank)]) == 0
    config = tmp_path / "run.toml"
    config.write_text(
        'mode = "fedavg"\nrounds = 1\nseed = 0\n'
        f'[data]\ndirectory = "{prepared}"\nmodel = "logistic"\nparties = {json.dumps(NAMES)}\n'
        "[training]\nbatch_size = 32\n[dp]\ntarget_epsilon = 4.0\ndelta = 1e-4\n",
        encoding="utf-8",
    )
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["run", "--config", str(config), "--out", str(run)]) == 0
    printed = capsys.readouterr().out
    assert f"institutions: {', '.join(NAMES)}" in printed
    assert "ledgers: INTACT" in printed

    roster = load_roster(run / "roster.toml")
    assert [c.party_id for c in roster.clients] == NAMES
    assert roster.server.party_id == "server"
    assert sorted(p.name for p in (run / "ledgers").glob("*.jsonl")) == sorted(
        f"{p}.jsonl" for p in [*NAMES, "server"]
    )
    assert verify_run(run).ok
    metrics: dict[str, Any] = json.loads((run / "metrics.json").read_text())
    assert [(c["tenant"], c["id"]) for c in metrics["clients"]] == list(enumerate(NAMES))
    assert sorted(p.stem for p in (run / "models").glob("*.safetensors")) == sorted(NAMES)
    for tenant, name in enumerate(NAMES):
        spend = json.loads((prepared / "securefed-spend" / f"tenant_{tenant}.json").read_text())
        assert [p["party"] for p in spend["participations"]] == [name]
    report = (run / "report.md").read_text() + (run / "report.html").read_text()
    for name in NAMES:
        assert name in report
    assert "bank-0" not in report

    out = tmp_path / "scores.csv"
    argv = ["predict", "--run", str(run), "--institution", NAMES[1], "--schema", str(schema)]
    assert main([*argv, "--input", str(files[1]), "--output", str(out)]) == 0
    assert f"scored {ROWS} records" in capsys.readouterr().out
    argv[4] = "bank-1"
    assert main([*argv, "--input", str(files[1]), "--output", str(tmp_path / "x.csv")]) == 2
    assert "no institution 'bank-1'" in capsys.readouterr().err


def _data(**data: object) -> dict[str, Any]:
    return {"data": {"tenants": 3, **data}}


@pytest.mark.parametrize(
    ("parties", "message"),
    [
        (["a", "b"], r"data\.parties must name exactly one party per tenant \(3\), got 2"),
        (["a", "b", "c", "d"], r"data\.parties must name exactly one party per tenant"),
        (["a", "b", "a"], r"data\.parties must be unique, a repeated"),
        (["a", "server", "c"], r"data\.parties\[1\] 'server' is the server's party id"),
        (["a", "b", "c d"], r"data\.parties\[2\] 'c d' must be 1 to 64 characters"),
        (["a", "", "c"], r"data\.parties\[1\] '' must be 1 to 64 characters"),
        (["a", "b", "x" * 65], r"data\.parties\[2\] 'x+' must be 1 to 64 characters"),
        (["a", "b", "bank/0"], r"data\.parties\[2\] 'bank/0' must be"),
        ("a,b,c", r"data\.parties must be a list of strings"),
        (["a", "b", 3], r"data\.parties must be a list of strings"),
    ],
)
def test_invalid_parties_are_refused_naming_the_key(parties: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_run_config(_data(parties=parties))


def test_unset_parties_keep_the_configuration_digest() -> None:
    plain = parse_run_config(_data())
    assert plain.data.parties is None
    assert "parties" not in plain.to_dict()["data"]
    named = parse_run_config(_data(parties=NAMES))
    assert named.data.parties == tuple(NAMES)
    assert named.sha256() != plain.sha256()
    assert parse_run_config(tomllib.loads(named.to_toml())) == named


def test_parties_for_a_data_directory_are_counted_against_its_tenants(tmp_path: Path) -> None:
    directory = tmp_path / "records"
    rng = np.random.default_rng(0)
    tenants = []
    for index in range(3):
        x, y = rng.normal(size=(40, 4)).astype(np.float32), np.arange(40, dtype=np.int64) % 2
        tenants.append(TenantData(index, x[:30], y[:30], x[30:], y[30:]))
    write_tenants(directory, tenants)
    # the directory holds 3 tenants; data.tenants (default 12) is not what counts
    config = parse_run_config(
        {"data": {"directory": str(directory), "model": "logistic", "parties": ["a", "b"]}}
    )
    with pytest.raises(ConfigError, match=r"data\.parties must name exactly one party per tenant"):
        run_federation(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "run.partial").exists()
    assert not (directory / "securefed-spend").exists()


def test_a_deployment_refuses_parties_the_roster_names_them() -> None:
    config = RunConfig(data=DataConfig(parties=("a", "b", "c")))
    with pytest.raises(ConfigError, match=r"data\.parties .*the roster names them"):
        check_deployable(config)
