"""The seed walkthrough (`examples/seed_emnist/`): its layout check and its two run configurations.

The configurations are loaded by the real config loader, the seed-scale one is checked against
the `seed-scale` experiment grid whose numbers its README quotes, and the real-EMNIST one runs for
one round on files written the way the ModelArts sample writes them (flat float samples, float
labels, 62 classes, no `federation.json`) -- so a user who follows the README on real EMNIST gets
a run, not a config error.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from securefed.cli import main
from securefed.data import Scheme
from securefed.runtime.config import (
    PersonalizationMode,
    SegmentSource,
    SimilaritySource,
    load_run_config,
)
from securefed.runtime.experiments import SEED_SCALE_GRID

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "seed_emnist"


def _check_layout() -> ModuleType:
    spec = importlib.util.spec_from_file_location("seed_emnist_check", EXAMPLE / "check_layout.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


check_layout = _check_layout()


def _write_seed_files(
    directory: Path, tenants: int, *, classes: int, train: int = 24, test: int = 6
) -> None:
    """Files as the ModelArts sample has them: (n, 784) float samples in [0, 1], float labels."""
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(tenants):
        for part, n in (("train", train), ("test", test)):
            samples = rng.random((n, 784), dtype=np.float32)
            labels = rng.integers(0, classes, n).astype(np.float64)
            labels[0] = classes - 1  # every tenant file set reaches the top class
            np.save(directory / f"client_{part}_samples_{i}.npy", samples, allow_pickle=False)
            np.save(directory / f"client_{part}_labels_{i}.npy", labels, allow_pickle=False)


def _prepare(tmp_path: Path, *, tenants: int, capsys: pytest.CaptureFixture[str]) -> Path:
    """`securefed data prepare` of ``tenants`` x 20 bundled records in 3 segments."""
    data = tmp_path / "data"
    argv = ["data", "prepare", "--source", "bundled", "--tenants", str(tenants)]
    argv += ["--groups", "3", "--samples-per-tenant", "20", "--out", str(data)]
    assert main(argv) == 0
    capsys.readouterr()
    return data


# --- check_layout.py ---------------------------------------------------------------------------


def test_check_layout_summarises_a_prepared_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _prepare(tmp_path, tenants=9, capsys=capsys)
    assert check_layout.main([str(data)]) == 0
    printed = capsys.readouterr().out
    assert "tenants        9 (indices 0..8)" in printed
    assert "classes        10" in printed
    assert "sizes 0: 3, 1: 3, 2: 3" in printed
    assert "warning" not in printed


def test_check_layout_reads_the_seed_files_without_federation_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_seed_files(tmp_path, 4, classes=62)
    assert check_layout.main([str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "sample shape   (1, 28, 28)" in printed  # (n, 784) read as one-channel images
    assert "classes        62" in printed
    assert "segments       none declared" in printed


def test_check_layout_refuses_a_pickle_bearing_file_and_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_seed_files(tmp_path, 3, classes=10)
    bad = tmp_path / "client_train_labels_1.npy"
    np.save(bad, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert check_layout.main([str(tmp_path)]) == 2
    assert "client_train_labels_1.npy" in capsys.readouterr().err


def test_check_layout_warns_about_a_segment_too_small_for_group_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _prepare(tmp_path, tenants=5, capsys=capsys)
    assert check_layout.main([str(data)]) == 0  # other modes can still run
    assert "needs at least 3 per segment" in capsys.readouterr().out


def test_check_layout_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_layout.main([]) == 2
    assert check_layout.main(["a", "b"]) == 2
    assert "usage" in capsys.readouterr().err


# --- the configurations ------------------------------------------------------------------------


def test_seed_scale_config_is_the_seed_scale_grid_cell_its_readme_quotes() -> None:
    config = load_run_config(EXAMPLE / "seed-scale.toml")
    assert config.mode is PersonalizationMode.GROUP
    assert config.secure
    assert config.personalize.segments is SegmentSource.DECLARED
    assert config.dp is not None
    assert config.dp.target_epsilon == 8.0
    assert config.dp.delta == 1e-5
    grid = SEED_SCALE_GRID
    assert (Scheme.CONCEPT_SHIFT, 62, 80) in grid.splits
    assert 8.0 in grid.epsilons
    assert config.rounds == grid.rounds
    assert config.training.local_epochs == grid.local_epochs
    (declared,) = [m for m in grid.methods if m.label == "group (declared)"]
    assert config.training.lr == declared.dp_lr
    assert config.training.batch_size == 32


def test_real_emnist_config_learns_segments_from_the_dp_statistic() -> None:
    config = load_run_config(EXAMPLE / "real-emnist.toml")
    assert config.mode is PersonalizationMode.GROUP
    assert config.secure
    assert config.data.directory == "FedAMP/EMNIST"
    assert config.personalize.segments is SegmentSource.LEARNED
    assert config.personalize.similarity is SimilaritySource.STATISTIC
    assert config.uses_statistic
    assert config.dp is not None
    assert config.statistic_epsilon == 2.0
    assert config.dp.target_epsilon == 8.0


def test_real_emnist_config_runs_on_files_in_the_samples_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One round of the real-EMNIST configuration on 9 tenants of seed-style files."""
    data = tmp_path / "FedAMP" / "EMNIST"
    _write_seed_files(data, 9, classes=62)
    text = (EXAMPLE / "real-emnist.toml").read_text()
    assert 'directory = "FedAMP/EMNIST"' in text
    assert "rounds = 25" in text
    config = tmp_path / "run.toml"
    config.write_text(
        text.replace('directory = "FedAMP/EMNIST"', f'directory = "{data.as_posix()}"')
        .replace("rounds = 25", "rounds = 1")
        .replace("local_epochs = 2", "local_epochs = 1")
    )
    out = tmp_path / "run"
    assert main(["run", "--config", str(config), "--out", str(out)]) == 0
    assert "ledgers: INTACT" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "group"
    assert metrics["secure"] is True
    assert metrics["rounds"] == 1
    assert len(metrics["clients"]) == 9
    assert all(0 < c["epsilon"] <= 8.0 + 1e-6 for c in metrics["clients"])
