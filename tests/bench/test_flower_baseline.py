"""The Flower SecAgg+ baseline: correct on Flower's own primitives, optional, lazily imported.

Tests that run Flower skip when flwr (the ``bench`` extra) is not installed; the tests of the
"flwr missing" path always run. Timings are only checked to be positive, never compared.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from securefed.bench import flower_baseline
from securefed.bench.flower_baseline import (
    CLIPPING_RANGE,
    MAX_WEIGHT,
    MODULUS_RANGE,
    QUANTIZATION_RANGE,
    FlowerBaselineResult,
    flower_available,
    run_flower_round,
)
from securefed.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def flwr() -> ModuleType:
    return pytest.importorskip("flwr")


def test_flower_available_is_a_bool() -> None:
    assert isinstance(flower_available(), bool)


def test_missing_flwr_is_a_config_error_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "flwr", None)  # `import flwr` now raises ImportError
    assert flower_available() is False
    with pytest.raises(ConfigError, match=r"make bench.*\.\[bench\]"):
        run_flower_round(n_clients=5, dim=10, dropouts=0)


def test_importing_the_baseline_does_not_import_flwr() -> None:
    code = "import sys, securefed.bench.flower_baseline; print('flwr' in sys.modules)"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(  # noqa: S603 -- fixed argv: this interpreter and a literal program
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert result.stdout.strip() == "False"


@pytest.mark.usefixtures("flwr")
@pytest.mark.parametrize("dropouts", [0, 1])
def test_one_round_is_correct_and_timed(dropouts: int) -> None:
    result = run_flower_round(n_clients=5, dim=1000, dropouts=dropouts)
    assert isinstance(result, FlowerBaselineResult)
    assert result.correct is True
    assert (result.n_clients, result.dim, result.dropouts) == (5, 1000, dropouts)
    assert result.client_s > 0
    assert result.server_s > 0
    assert result.total_s > result.server_s + result.client_s
    assert result.to_dict()["correct"] is True


def test_reports_the_installed_flower_version(flwr: ModuleType) -> None:
    assert run_flower_round(n_clients=3, dim=4, dropouts=0).flower_version == flwr.__version__


@pytest.mark.usefixtures("flwr")
def test_given_inputs_at_the_clipping_bounds_and_several_dropouts() -> None:
    inputs = [np.full(64, CLIPPING_RANGE), np.full(64, -CLIPPING_RANGE)]
    inputs += [np.linspace(-CLIPPING_RANGE, CLIPPING_RANGE, 64) for _ in range(4)]
    result = run_flower_round(n_clients=6, dim=64, dropouts=3, inputs=inputs, threshold=3)
    assert result.correct is True


@pytest.mark.usefixtures("flwr")
def test_correct_is_false_when_a_dropped_clients_masks_stay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(flower_baseline, "_remove_dropped_masks", lambda total, *_: total)
    assert run_flower_round(n_clients=5, dim=100, dropouts=1).correct is False


@pytest.mark.usefixtures("flwr")
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_clients": 1, "dim": 10, "dropouts": 0}, "n_clients"),
        ({"n_clients": 5, "dim": 0, "dropouts": 0}, "dim"),
        ({"n_clients": 5, "dim": 10, "dropouts": 2}, "threshold"),  # t = 4 > 3 survivors
        ({"n_clients": 5, "dim": 10, "dropouts": -1}, "dropouts"),
        ({"n_clients": 5, "dim": 10, "dropouts": 0, "threshold": 1}, "threshold"),
        ({"n_clients": 2, "dim": 3, "dropouts": 0, "inputs": [np.zeros(3)]}, "inputs"),
        ({"n_clients": 2, "dim": 3, "dropouts": 0, "inputs": [np.full(3, 9.0)] * 2}, "within"),
        ({"n_clients": 2, "dim": 3, "dropouts": 0, "inputs": [np.full(3, np.nan)] * 2}, "finite"),
    ],
)
def test_invalid_arguments_are_config_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run_flower_round(**kwargs)  # type: ignore[arg-type]


@pytest.mark.usefixtures("flwr")
def test_parameters_are_secaggplus_workflow_defaults() -> None:
    from flwr.server.workflow import SecAggPlusWorkflow  # noqa: PLC0415 -- optional extra

    defaults = inspect.signature(SecAggPlusWorkflow.__init__).parameters
    assert defaults["clipping_range"].default == CLIPPING_RANGE
    assert defaults["quantization_range"].default == QUANTIZATION_RANGE
    assert defaults["modulus_range"].default == MODULUS_RANGE
    assert defaults["max_weight"].default == MAX_WEIGHT
