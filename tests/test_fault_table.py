"""The fault table (issue 19, item 5): each fault an operator can meet, through the command line.

One row per scenario, each asserting the outcome -- the exit code, a key phrase of the one-line
message, no traceback -- and that nothing is lost: the data directory is byte for byte unchanged,
``--out`` is not created (or its earlier content is unchanged), a ledger directory is unchanged by
``securefed audit verify``. The CLI runs in-process (``securefed.cli.main``), so an uncaught
exception would fail the row rather than print a traceback; stdout and stderr are still checked.

* Data faults: one tenant file of a small seed layout (3 tenants of 24 train + 6 test records,
  12 float32 features, labels 0..2, the MLP) is broken; ``securefed run`` refuses it while loading,
  before anything is written.
* Ledger faults: one tiny finished run (fedavg, secure, no DP, 1 round) is made once per module
  and copied per row; ``securefed audit verify`` must name the file and the kind of problem.
* ``--out`` faults: few rows on purpose (run output is being reworked: a temporary directory
  renamed at the end, ``--resume``); only the exit code, a fragment and untouched content.
* Configuration errors: exit 2 before training, one line; ``--out`` not created.

Rows marked [n] are already tested through the command line elsewhere and not repeated here:

[1] tests/test_cli_run.py::test_a_huge_label_is_a_one_line_error
[2] tests/test_cli_audit.py::test_tampering_exits_1_naming_the_first_bad_entry, rows
    ``_edit_payload`` (also ``_edit_hash``), ``_delete_middle`` and ``_swap``
[3] tests/test_cli_audit.py::test_wiped_ledgers_exit_3_incomplete_naming_each_party
[4] tests/test_cli_run.py::test_out_under_a_file_exits_2 (the file left as it was:
    tests/runtime/test_federated.py::test_out_under_a_regular_file_is_a_configuration_error)
[5] tests/test_cli_run.py::test_configuration_errors_exit_2_and_write_nothing (``runds``; and
    ``demo --tenants 2``, while ``tenants = 2`` in a config file is a row here)
[6] tests/test_cli_run.py::test_an_intolerable_dropout_rate_exits_2_and_writes_nothing

The same faults at the library level (``load_tenants``, ``verify_run``, ``parse_run_config``,
``run_federation``) are in tests/data/test_layout.py, tests/audit/test_verify.py,
tests/runtime/test_config.py and tests/runtime/test_federated.py.

Fault table as it stands. ``securefed run --config C --out D`` prints an error as one stderr line
``securefed: configuration error: <message>`` (before the start banner when the checks of
``securefed run --dry-run`` find it, after it when the parties are being built); a data error's
message starts with the offending file's path, a parse error's with C's.
``securefed audit verify D`` prints its verdict as stdout's first line, then ``problem:``,
``incomplete:`` and ``note:`` lines.

Data (``securefed run``; <f> is the file's path):

| scenario | exit | message fragment |
|---|---|---|
| object-dtype array | 2 | `<f>: holds an object array that would need pickle` |
| truncated `.npy` | 2 | `<f>: not a readable .npy array (Failed to read all data` |
| zero-byte `.npy` | 2 | `<f>: not a readable .npy array (No data left in file)` |
| fewer labels than samples | 2 | `<samples f>: 24 samples but <labels f> has 23 labels` |
| NaN in samples | 2 | `<f>: samples hold non-finite values (NaN or inf)` |
| inf in samples | 2 | `<f>: samples hold non-finite values (NaN or inf)` |
| a tenant's test labels missing | 2 | `<f>: missing (tenant 2 has 3 of its 4 files)` |
| negative label | 2 | `<f>: labels must be >= 0, found -1` |
| label >= 10,000 [1] | 2 | `<f>: label 1000000000 is too large` |

Ledgers (``securefed audit verify D``; <f> is ``ledgers/<party>.jsonl``):

| scenario | exit | first line |
|---|---|---|
| one field edited [2] | 1 | `TAMPERED: <f> line L (seq S): edited:` |
| one line deleted [2] | 1 | `TAMPERED: <f> line L (seq S): deleted: seq S-1 missing` |
| two lines swapped [2] | 1 | `TAMPERED: <f> line L (seq S): reordered:` |
| last line cut mid-way | 1 | `TAMPERED: <f> line L (seq S): truncated: the file ends in` |
| a line duplicated | 1 | `TAMPERED: <f> line 5 (seq 3): reordered: seq 3 appears twice` |
| one party's file deleted | 1 | `TAMPERED: <f> (seq S): truncated: ledger missing` (+ `note:`) |
| two parties' files swapped | 1 | `TAMPERED: <f> line 1 (seq 0): bad-signature:` (+ `problem:`) |
| every ledger wiped [3] | 3 | `INCOMPLETE: <f> ...`, every party named |

Run directory (``securefed run``):

| scenario | exit | message fragment |
|---|---|---|
| `--out` not empty | 2 | `D is not empty: a run directory holds exactly one run` |
| parent read-only (non-root) | 2 | `--out D: cannot create it: Permission denied` |
| `--out` under a regular file [4] | 2 | `--out D: <file> is a file, not a directory` |

Configuration (``securefed run``):

| scenario | exit | message fragment |
|---|---|---|
| unknown key [5] | 2 | `C: unknown key(s) in the top level: runds` |
| wrong type | 2 | `C: training.lr must be a number, got 'fast'` |
| `rounds = 0` | 2 | `C: rounds must be an integer >= 1, got 0` |
| `tenants = 2` [5] | 2 | `C: data.tenants must be an integer >= 3, got 2` |
| unknown mode | 2 | `C: mode = 'fedprox' is not one of 'local', 'fedavg', ...` |
| statistic similarity, fedavg | 2 | `similarity = "statistic" needs a mode that learns` |
| intolerable `dropout_rate` [6] | 2 | `cannot be tolerated` |
| `target_epsilon = 1e-6` | 2 | `no noise multiplier reaches epsilon=1e-06 ... too low` |
| `dp.delta = 0.5` | 2 | `delta=0.5 must be much smaller than 1/n` |
| the CNN on tabular data | 2 | `the CNN takes 1x28x28 images, the data has ...` |

The last three are found while the parties are built; the run is built in ``D.partial``, which
is removed again, so D is never created and nothing is written next to the records (before
issue 19: D was left with config.toml, roster.toml and two ledger entries per party).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from securefed.cli import main

Capture = pytest.CaptureFixture[str]
CONFIG_ERROR = "securefed: configuration error: "

TENANTS = 3
TRAIN, TEST, FEATURES, CLASSES = 24, 6, 12, 3


# --- helpers ---------------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, str]:
    """Every file and directory under ``root``, by relative path: a file's SHA-256, or "dir".
    Empty when ``root`` does not exist."""
    if not root.exists():
        return {}
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        key = path.relative_to(root).as_posix()
        found[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _write_layout(directory: Path) -> Path:
    """A valid seed layout: 3 tenants, 24 + 6 records of 12 float32 features, labels 0..2."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(19)
    for i in range(TENANTS):
        for split, n in (("train", TRAIN), ("test", TEST)):
            samples = rng.normal(size=(n, FEATURES)).astype(np.float32)
            labels = np.arange(n, dtype=np.int64) % CLASSES  # every class in every split
            np.save(directory / f"client_{split}_samples_{i}.npy", samples, allow_pickle=False)
            np.save(directory / f"client_{split}_labels_{i}.npy", labels, allow_pickle=False)
    return directory


def _config_text(
    data: Path,
    *,
    mode: str = '"fedavg"',
    rounds: str = "1",
    data_lines: str | None = None,
    model: str = '"mlp"',
    training: str = "",
    tail: str = "",
) -> str:
    """The tiny run of :func:`_config`, with one part replaced to make it wrong."""
    where = f'directory = "{data}"' if data_lines is None else data_lines
    return (
        f'name = "fault"\nmode = {mode}\nrounds = {rounds}\n'
        f"[data]\n{where}\nmodel = {model}\n"
        f"[training]\nbatch_size = 8\n{training}\n{tail}\n"
    )


def _config(path: Path, data: Path) -> Path:
    """A valid tiny run over ``data`` (fedavg, secure, no DP, 1 round, the MLP)."""
    path.write_text(_config_text(data), encoding="utf-8")
    return path


def _cli(capsys: Capture, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def _assert_one_line_config_error(status: int, out: str, err: str, *fragments: str) -> None:
    """Exit 2; stdout empty; on stderr exactly one error line, holding every fragment, besides at
    most the start banner (``securefed: <mode> ... -> <out>``); no traceback."""
    assert "Traceback" not in out + err
    assert status == 2, (out, err)
    assert out == ""
    lines = err.splitlines()
    errors = [line for line in lines if line.startswith(CONFIG_ERROR)]
    assert len(errors) == 1, err
    for fragment in fragments:
        assert fragment in errors[0], err
    others = [line for line in lines if line not in errors]
    assert len(others) <= 1, err
    assert all(line.startswith("securefed: ") and " -> " in line for line in others), err


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid seed layout shared by the rows that only read it (config and --out rows)."""
    return _write_layout(tmp_path_factory.mktemp("layout") / "data")


# --- data faults: securefed run refuses the layout, writes nothing ---------------------------


def _object_dtype(data: Path) -> str:
    name = "client_train_labels_1.npy"
    np.save(data / name, np.array([{"label": 1}, 2], dtype=object), allow_pickle=True)
    return name


def _truncated(data: Path) -> str:
    name = "client_train_samples_1.npy"
    raw = (data / name).read_bytes()
    (data / name).write_bytes(raw[: len(raw) // 2])
    return name


def _zero_bytes(data: Path) -> str:
    name = "client_test_samples_2.npy"
    (data / name).write_bytes(b"")
    return name


def _fewer_labels(data: Path) -> str:
    labels = np.load(data / "client_train_labels_0.npy")
    np.save(data / "client_train_labels_0.npy", labels[:-1], allow_pickle=False)
    return "client_train_samples_0.npy"  # the message starts with the samples file


def _with_value(name: str, value: float) -> Callable[[Path], str]:
    def fault(data: Path) -> str:
        samples = np.load(data / name)
        samples[3, 4] = value
        np.save(data / name, samples, allow_pickle=False)
        return name

    return fault


def _missing_test_labels(data: Path) -> str:
    name = "client_test_labels_2.npy"
    (data / name).unlink()
    return name


def _negative_label(data: Path) -> str:
    name = "client_train_labels_2.npy"
    labels = np.load(data / name)
    labels[5] = -1
    np.save(data / name, labels, allow_pickle=False)
    return name


DATA_FAULTS = [
    pytest.param(_object_dtype, "holds an object array that would need pickle", id="object-dtype"),
    pytest.param(_truncated, "not a readable .npy array", id="truncated-npy"),
    pytest.param(_zero_bytes, "not a readable .npy array", id="zero-byte-npy"),
    pytest.param(
        _fewer_labels,
        "24 samples but client_train_labels_0.npy has 23 labels",
        id="length-mismatch",
    ),
    pytest.param(
        _with_value("client_train_samples_1.npy", np.nan),
        "samples hold non-finite values (NaN or inf)",
        id="nan-in-samples",
    ),
    pytest.param(
        _with_value("client_test_samples_0.npy", -np.inf),
        "samples hold non-finite values (NaN or inf)",
        id="inf-in-samples",
    ),
    pytest.param(
        _missing_test_labels, "missing (tenant 2 has 3 of its 4 files)", id="missing-tenant-file"
    ),
    pytest.param(_negative_label, "labels must be >= 0, found -1", id="negative-label"),
]


@pytest.mark.parametrize(("fault", "fragment"), DATA_FAULTS)
def test_a_data_fault_exits_2_naming_the_file_and_writes_nothing(
    tmp_path: Path, capsys: Capture, fault: Callable[[Path], str], fragment: str
) -> None:
    data = _write_layout(tmp_path / "data")
    bad_file = fault(data)
    before = _tree(data)
    config = _config(tmp_path / "run.toml", data)
    out = tmp_path / "run"
    status, stdout, stderr = _cli(capsys, "run", "--config", str(config), "--out", str(out))
    _assert_one_line_config_error(status, stdout, stderr, f"{data / bad_file}: ", fragment)
    assert _tree(data) == before
    assert not out.exists()


# --- ledger faults on a finished run: securefed audit verify names the file ------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny finished run (3 tenants, fedavg, secure, no DP, 1 round), made once."""
    root = tmp_path_factory.mktemp("finished")
    config = _config(root / "run.toml", _write_layout(root / "data"))
    run_dir = root / "run"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["run", "--config", str(config), "--out", str(run_dir)]) == 0
    return run_dir


def _ledger(run_dir: Path, party: str) -> Path:
    return run_dir / "ledgers" / f"{party}.jsonl"


def _cut_last_line_midway(run_dir: Path) -> None:
    path = _ledger(run_dir, "bank-0")
    raw = path.read_bytes()
    start = raw.rstrip(b"\n").rfind(b"\n") + 1  # where the last line begins
    path.write_bytes(raw[: start + (len(raw) - start) // 2])


def _duplicate_a_line(run_dir: Path) -> None:
    path = _ledger(run_dir, "bank-1")
    lines = path.read_bytes().splitlines(keepends=True)
    lines.insert(3, lines[3])
    path.write_bytes(b"".join(lines))


def _delete_one_ledger(run_dir: Path) -> None:
    _ledger(run_dir, "bank-2").unlink()


def _swap_two_ledgers(run_dir: Path) -> None:
    first, second = _ledger(run_dir, "bank-0"), _ledger(run_dir, "bank-1")
    parked = first.with_suffix(".parked")
    first.rename(parked)
    second.rename(first)
    parked.rename(second)


LEDGER_FAULTS = [
    pytest.param(
        _cut_last_line_midway,
        r"TAMPERED: ledgers/bank-0\.jsonl line \d+ \(seq \d+\): truncated: "
        r"the file ends in the middle of an entry",
        None,
        id="last-line-cut-midway",
    ),
    pytest.param(
        _duplicate_a_line,
        r"TAMPERED: ledgers/bank-1\.jsonl line 5 \(seq 3\): reordered: seq 3 appears twice",
        None,
        id="line-duplicated",
    ),
    pytest.param(
        _delete_one_ledger,
        r"TAMPERED: ledgers/bank-2\.jsonl \(seq \d+\): truncated: ledger missing; "
        r"bank-\d's checkpoint",
        "note: Roster parties without a ledger here: bank-2.",
        id="one-ledger-deleted",
    ),
    pytest.param(
        _swap_two_ledgers,
        r"TAMPERED: ledgers/bank-0\.jsonl line 1 \(seq 0\): bad-signature: "
        r"not signed by 'bank-0'",
        "problem: ledgers/bank-1.jsonl line 1 (seq 0): bad-signature: not signed by 'bank-1'",
        id="two-ledgers-swapped",
    ),
]


@pytest.mark.parametrize(("fault", "first_line", "also"), LEDGER_FAULTS)
def test_a_ledger_fault_is_tampered_naming_the_file(
    finished_run: Path,
    tmp_path: Path,
    capsys: Capture,
    *,
    fault: Callable[[Path], None],
    first_line: str,
    also: str | None,
) -> None:
    original = _tree(finished_run)
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    fault(run_dir)
    before = _tree(run_dir)
    status, out, err = _cli(capsys, "audit", "verify", str(run_dir))
    assert "Traceback" not in out + err
    assert err == ""
    assert status == 1, out
    lines = out.splitlines()
    assert re.match(first_line, lines[0]), lines
    if also is not None:
        assert any(line.startswith(also) for line in lines[1:]), lines
    assert not any("INTACT" in line for line in lines)
    assert _tree(run_dir) == before  # verifying changes nothing
    assert _tree(finished_run) == original  # and the shared run is untouched


def test_the_shared_finished_run_is_intact(finished_run: Path, capsys: Capture) -> None:
    """The baseline of the ledger rows: the untouched run verifies (so each row's fault is what
    the verifier finds)."""
    status, out, err = _cli(capsys, "audit", "verify", str(finished_run))
    assert (status, err) == (0, "")
    assert out.startswith("INTACT: 4 ledgers, ")
    metrics = json.loads((finished_run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["status"] == "completed"


# --- --out faults: exit 2, pre-existing content unchanged -------------------------------------


def _non_empty_out(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    (out / "ledgers").mkdir(parents=True)
    (out / "old.txt").write_text("an earlier run's notes\n", encoding="utf-8")
    (out / "ledgers" / "server.jsonl").write_bytes(b'{"an": "archived ledger"}\n')
    return out


def _read_only_parent(tmp_path: Path) -> Path:
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(stat.S_IRUSR | stat.S_IXUSR)
    return parent / "run"


OUT_FAULTS = [
    pytest.param(
        _non_empty_out,
        "is not empty: a run directory holds exactly one run",
        id="non-empty-out",
    ),
    pytest.param(
        _read_only_parent,
        "cannot create it",
        id="read-only-parent",
        marks=pytest.mark.skipif(
            os.name != "posix" or os.geteuid() == 0,
            reason="root writes into a read-only directory anyway",
        ),
    ),
]


@pytest.mark.parametrize(("fault", "fragment"), OUT_FAULTS)
def test_an_out_fault_exits_2_and_leaves_what_was_there(
    layout: Path,
    tmp_path: Path,
    capsys: Capture,
    fault: Callable[[Path], Path],
    fragment: str,
) -> None:
    config = _config(tmp_path / "run.toml", layout)
    out = fault(tmp_path)
    before = _tree(out.parent)
    try:
        status, stdout, stderr = _cli(capsys, "run", "--config", str(config), "--out", str(out))
        assert "Traceback" not in stdout + stderr
        assert status == 2, (stdout, stderr)
        assert fragment in stderr
        assert _tree(out.parent) == before
    finally:
        out.parent.chmod(stat.S_IRWXU)  # let pytest clean up


# --- configuration errors: exit 2, one line, --out not created --------------------------------


CONFIG_ERRORS = [
    pytest.param(
        {"training": 'lr = "fast"'}, "training.lr must be a number, got 'fast'", id="wrong-type"
    ),
    pytest.param({"rounds": "0"}, "rounds must be an integer >= 1, got 0", id="rounds-0"),
    pytest.param(
        {"data_lines": "tenants = 2"}, "data.tenants must be an integer >= 3, got 2", id="tenants-2"
    ),
    pytest.param({"mode": '"fedprox"'}, "mode = 'fedprox' is not one of", id="unknown-mode"),
    pytest.param(
        {"tail": '[personalize]\nsimilarity = "statistic"'},
        'personalize.similarity = "statistic" needs a mode that learns similarities',
        id="statistic-similarity-with-fedavg",
    ),
    pytest.param(
        {"tail": "[dp]\ntarget_epsilon = 1e-6\ndelta = 1e-3"},
        "no noise multiplier reaches epsilon=1e-06",
        id="impossible-dp-budget",
    ),
    pytest.param(
        {"tail": "[dp]\ndelta = 0.5"},
        "delta=0.5 must be much smaller than 1/n",
        id="dp-delta-not-below-1-over-n",
    ),
    pytest.param(
        {"model": '"cnn"'},
        "the CNN takes 1x28x28 images, the data has samples of shape (12,)",
        id="cnn-on-tabular-data",
    ),
]


@pytest.mark.parametrize(("wrong", "fragment"), CONFIG_ERRORS)
def test_a_configuration_error_exits_2_in_one_line_and_writes_nothing(
    layout: Path, tmp_path: Path, capsys: Capture, wrong: dict[str, str], fragment: str
) -> None:
    config = tmp_path / "run.toml"
    config.write_text(_config_text(layout, **wrong), encoding="utf-8")
    data_before = _tree(layout)
    out = tmp_path / "run"
    status, stdout, stderr = _cli(capsys, "run", "--config", str(config), "--out", str(out))
    _assert_one_line_config_error(status, stdout, stderr, fragment)
    assert _tree(layout) == data_before
    assert not out.exists(), sorted(_tree(out))
