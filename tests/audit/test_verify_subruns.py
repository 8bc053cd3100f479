"""`securefed audit verify` and the report cover a run directory's sub-runs: the one-round secure
sums with their own ledgers (``preprocessing/``, ``preprocessing.interrupted-<k>/``,
``evaluation/``), verified under the run's roster, the exit status the worst of all.

The run directory of most tests is real: a 2-round logistic run on three tiny banks with
``[data] standardize = "federation"`` and a binary target, so it has a preprocessing and an
evaluation sub-run (built once, about a second; each test works on a copy). The interrupted
attempt and the baseline's sub-run are synthetic (:func:`tests.audit.build_run` and
:func:`_write_subrun`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from securefed.audit import (
    Hazard,
    Ledger,
    RunFinished,
    ledger_path,
    record_final_checkpoint,
    render_report,
    verify,
    verify_run,
)
from securefed.audit.verify import EXIT_INCOMPLETE, EXIT_INTACT, EXIT_TAMPERED, VerifyStatus
from securefed.cli import main
from securefed.runtime import evaluation, preprocess
from securefed.runtime.federated import run_federation
from securefed.secagg.roster import save_roster
from securefed.testing import make_federation
from tests.audit import Run, build_run, fixed_clock, run_configured
from tests.runtime.test_preprocess import _config, _tables

Capture = pytest.CaptureFixture[str]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("subruns")
    data, _ = _tables(root)
    run_dir = root / "run"
    summary = run_federation(_config(data, dp=False), run_dir)
    assert summary.metrics["status"] == "completed"
    assert summary.metrics["pooled_credit"] is not None
    return run_dir


@pytest.fixture
def run_dir(built: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(built, copy)
    return copy


def _verify(capsys: Capture, *argv: str) -> tuple[int, list[str]]:
    status = main(["audit", "verify", *argv])
    return status, capsys.readouterr().out.splitlines()


def _edit_one_byte(path: Path) -> int:
    """Change one hex digit of the first ``update.released`` entry's digest; its line number."""
    lines = path.read_bytes().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if b'"update.released"' in line)
    at = lines[index].index(b'"masked_sha256":"') + len(b'"masked_sha256":"')
    line = bytearray(lines[index])
    line[at] = ord("0") if line[at] != ord("0") else ord("1")
    lines[index] = bytes(line)
    path.write_bytes(b"".join(lines))
    return index + 1


def test_verify_covers_both_subruns(run_dir: Path, capsys: Capture) -> None:
    result = verify_run(run_dir)
    assert [s.directory for s in result.subruns] == ["preprocessing", "evaluation"]
    assert all(s.status is VerifyStatus.INTACT and s.result.ledgers == 4 for s in result.subruns)
    assert (result.status, result.overall, result.exit_code) == (
        VerifyStatus.INTACT,
        VerifyStatus.INTACT,
        EXIT_INTACT,
    )
    status, out = _verify(capsys, str(run_dir))
    assert status == EXIT_INTACT
    assert out[0].startswith("INTACT: 4 ledgers, ")
    subruns = [line for line in out if line.startswith("sub-run ")]
    assert [line.split(":")[0] for line in subruns] == [
        "sub-run preprocessing",
        "sub-run evaluation",
    ]
    assert all(": INTACT: 4 ledgers, " in line for line in subruns)
    assert not any(line.startswith("overall:") for line in out)

    status, out = _verify(capsys, str(run_dir), "--json")
    document = json.loads(out[0])
    assert (status, document["status"], document["run_status"]) == (0, "INTACT", "INTACT")
    listed = document["subruns"]
    assert [(s["directory"], s["status"], s["ok"], s["ledgers"]) for s in listed] == [
        ("preprocessing", "INTACT", True, 4),
        ("evaluation", "INTACT", True, 4),
    ]
    assert all(s["entries"] > 0 and s["problems"] == [] for s in listed)


@pytest.mark.parametrize("subrun", ["preprocessing", "evaluation"])
def test_one_edited_byte_in_a_subrun_ledger_is_tampered(
    run_dir: Path, subrun: str, capsys: Capture
) -> None:
    line = _edit_one_byte(ledger_path(run_dir / subrun, "bank-1"))
    status, out = _verify(capsys, str(run_dir))
    assert status == EXIT_TAMPERED
    assert out[0].startswith("INTACT: 4 ledgers")  # the run's own ledgers are intact
    where = f"{subrun}/ledgers/bank-1.jsonl line {line} (seq {line - 1}): edited"
    assert f"sub-run {subrun}: TAMPERED: {where}" in "\n".join(out)
    assert f"overall: TAMPERED (exit status 1): the sub-run {subrun} is TAMPERED" in out

    status, out = _verify(capsys, str(run_dir), "--json")
    document = json.loads(out[0])
    assert (status, document["status"], document["exit_code"]) == (1, "TAMPERED", 1)
    assert document["run_status"] == "INTACT"
    tampered = next(s for s in document["subruns"] if s["directory"] == subrun)
    assert (tampered["ok"], tampered["problems"][0]["file"]) == (
        False,
        f"{subrun}/ledgers/bank-1.jsonl",
    )


def test_a_subrun_under_another_roster_is_flagged(run_dir: Path, capsys: Capture) -> None:
    other = make_federation(3)
    save_roster(other.roster, run_dir / "evaluation" / "roster.toml", overwrite=True)
    status, out = _verify(capsys, str(run_dir))
    assert status == EXIT_TAMPERED
    line = next(line for line in out if line.startswith("sub-run evaluation:"))
    assert line.startswith("sub-run evaluation: TAMPERED: evaluation/roster.toml: edited: not ")
    assert "another identity key for bank-0, bank-1, bank-2, server" in line


def test_a_substituted_subrun_that_verifies_alone_is_flagged(run_dir: Path) -> None:
    """A sub-run written under fresh keys and its own roster verifies on its own, but not as a
    sub-run of this run: its roster is flagged and every ledger fails under the run's keys."""
    shutil.rmtree(run_dir / "evaluation")
    fresh = build_run(run_dir.parent / "elsewhere")  # another federation: fresh keys
    _write_subrun(fresh, "evaluation").rename(run_dir / "evaluation")
    assert verify_run(run_dir / "evaluation").status is VerifyStatus.INTACT
    result = verify_run(run_dir)
    evaluation = next(s for s in result.subruns if s.directory == "evaluation")
    assert evaluation.status is VerifyStatus.TAMPERED
    problems = evaluation.result.problems
    assert (problems[0].file, problems[0].kind.value) == ("evaluation/roster.toml", "edited")
    assert {p.kind.value for p in problems[1:]} == {"bad-signature"}
    assert result.exit_code == EXIT_TAMPERED


def test_a_missing_preprocessing_subrun_is_incomplete(run_dir: Path, capsys: Capture) -> None:
    shutil.rmtree(run_dir / "preprocessing")
    status, out = _verify(capsys, str(run_dir))
    assert status == EXIT_INCOMPLETE
    line = next(line for line in out if line.startswith("sub-run preprocessing:"))
    assert "record preprocessing.applied, but there is no preprocessing/ directory" in line


def test_the_report_names_both_subruns_and_the_undp_release(run_dir: Path) -> None:
    summary = render_report(run_dir, out_html=run_dir / "r.html", out_md=run_dir / "r.md")
    assert summary.verified is True
    markdown = (run_dir / "r.md").read_text(encoding="utf-8")
    assert "| ledgers of sub-run preprocessing/ | INTACT: 4 ledgers, " in markdown
    assert "| ledgers of sub-run evaluation/ | INTACT: 4 ledgers, " in markdown
    disclosure = markdown[markdown.index("Outside the training rounds") :]
    row = next(line for line in disclosure.splitlines() if line.startswith("| evaluation/ |"))
    assert "test splits' score histograms" in row
    assert "| NO (not noised: its hazard says so) | INTACT |" in row
    assert "differential privacy does NOT cover" in disclosure
    assert "| preprocessing/ |" in disclosure

    _edit_one_byte(ledger_path(run_dir / "evaluation", "bank-0"))
    summary = render_report(run_dir, out_html=run_dir / "r.html", out_md=run_dir / "r.md")
    assert summary.verified is False
    markdown = (run_dir / "r.md").read_text(encoding="utf-8")
    assert "| ledgers of sub-run evaluation/ | TAMPERED: evaluation/ledgers/bank-0" in markdown
    assert "**Attention: ledgers of sub-run evaluation/" in markdown


# --- synthetic sub-runs: an interrupted attempt, a baseline's ----------------------------------


def _write_subrun(run: Run, name: str, *, final: bool = True) -> Path:
    """A minimal sub-run of ``run`` signed by its parties: run.configured, a hazard and, when
    ``final``, run.finished and the final checkpoint (else it ends as an interrupted sum)."""
    directory = run.run_dir / name
    directory.mkdir()
    save_roster(run.federation.roster, directory / "roster.toml")
    ledgers = {
        actor: Ledger.open(ledger_path(directory, actor), actor, key, clock=fixed_clock())
        for actor, key in run.keys.items()
    }
    fingerprints = {a: k.verify_key().fingerprint().hex() for a, k in run.keys.items()}
    for ledger in ledgers.values():
        ledger.record(run_configured(run.federation, fingerprints, "cd" * 32))
        ledger.record(Hazard(text="a sum outside the rounds"))
    if final:
        for ledger in ledgers.values():
            ledger.record(RunFinished(rounds=1, status="completed"))
        record_final_checkpoint(ledgers.values())
    for ledger in ledgers.values():
        ledger.close()
    return directory


def test_an_interrupted_attempt_is_listed_and_its_incompleteness_not_counted(
    tmp_path: Path, capsys: Capture
) -> None:
    run = build_run(tmp_path)
    _write_subrun(run, "preprocessing.interrupted-1", final=False)
    _write_subrun(run, "preprocessing")
    status, out = _verify(capsys, str(run.run_dir))
    assert status == EXIT_INTACT
    lines = [line for line in out if line.startswith("sub-run ")]
    assert lines[0].startswith("sub-run preprocessing.interrupted-1: INCOMPLETE: ")
    assert lines[0].endswith("(an interrupted attempt kept as evidence: expected, not counted)")
    assert lines[1] == "sub-run preprocessing: INTACT: 4 ledgers, 16 entries verified"

    _edit_one_byte_of_hazard(ledger_path(run.run_dir / "preprocessing.interrupted-1", "bank-0"))
    status, out = _verify(capsys, str(run.run_dir))
    assert status == EXIT_TAMPERED  # tampering counts, also in an interrupted attempt


def _edit_one_byte_of_hazard(path: Path) -> None:
    path.write_bytes(path.read_bytes().replace(b"outside the rounds", b"outside the roundz", 1))


def test_a_baselines_subruns_are_listed_without_changing_the_verdict(
    tmp_path: Path, capsys: Capture
) -> None:
    run = build_run(tmp_path)
    baseline = build_run(tmp_path / "baseline")
    _write_subrun(baseline, "evaluation")
    _edit_one_byte_of_hazard(ledger_path(baseline.run_dir / "evaluation", "bank-2"))
    (run.run_dir / "baselines").mkdir()
    baseline.run_dir.rename(run.run_dir / "baselines" / "local")
    status, out = _verify(capsys, str(run.run_dir))
    assert status == EXIT_INTACT
    line = next(line for line in out if line.startswith("sub-run "))
    assert line.startswith(
        "sub-run baselines/local/evaluation: TAMPERED: "
        "baselines/local/evaluation/ledgers/bank-2.jsonl line 2 (seq 1): edited"
    )
    assert line.endswith("(a baseline's sub-run: listed, it does not change the verdict)")


def test_the_audit_names_the_subruns_as_the_runtime_writes_them(tmp_path: Path) -> None:
    assert verify.PREPROCESSING_DIR == preprocess.PREPROCESSING_DIR
    assert verify.EVALUATION_DIR == evaluation.EVALUATION_DIR
    attempt = tmp_path / preprocess.PREPROCESSING_DIR
    attempt.mkdir()
    preprocess._set_aside(attempt)  # how the runtime keeps an interrupted sum's ledgers
    (tmp_path / "evaluation").mkdir()
    (tmp_path / "preprocessing.interrupted-x").mkdir()  # not a sub-run
    assert verify.subrun_directories(tmp_path) == ["preprocessing.interrupted-1", "evaluation"]
