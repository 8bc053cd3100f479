"""``securefed predict`` and ``securefed export`` on a deployment agent's state directory
(issue 22): the model an agent keeps in ``STATE/model.safetensors`` is scored once the agent's
own ledger records the end of the run, under the schema digest the agent saved with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pytest

from securefed.audit import Ledger, RunFinished, ledger_path
from securefed.crypto import get_suite
from securefed.models import ModelKind, load_saved_model, save_model
from securefed.runtime.export import export_onnx
from securefed.runtime.federated import SCHEMA_METADATA
from securefed.runtime.nodes import MODEL_FILE
from securefed.runtime.scoring import (
    RunNotFinishedError,
    SchemaMismatchError,
    UnknownInstitutionError,
    predict,
)
from tests.runtime.test_scaled_scoring import PARTY, FakeRun


def _agent_state(root: Path, *, finished: str | None, digest: bool = True) -> tuple[Path, FakeRun]:
    """An agent's state directory: its model (as the agent saves it) and its ledger."""
    run = FakeRun(root, ModelKind.LOGISTIC, "default")
    state = root / "state"
    state.mkdir()
    metadata = {"party": PARTY, "round": "3", "config_sha256": "0" * 64}
    if digest:
        metadata[SCHEMA_METADATA] = run.schema.digest
    model = load_saved_model(run.model_path).model  # the run's model, kept as an agent keeps it
    save_model(model, state / MODEL_FILE, metadata=metadata, spec=run.spec)
    key = get_suite("default").generate_signing_key()
    with Ledger.open(ledger_path(state, PARTY), PARTY, key) as ledger:
        if finished is not None:
            ledger.record(RunFinished(rounds=3, status=finished))
    return state, run


def test_a_finished_agents_model_scores_like_the_simulations(tmp_path: Path) -> None:
    state, run = _agent_state(tmp_path, finished="completed")
    out = tmp_path / "scores.csv"
    result = predict(state, PARTY, run.schema, run.records, out)
    assert result.rows == len(run.features)
    scores = pacsv.read_csv(out).column("score").to_numpy()
    assert np.allclose(scores, run.torch_scores(run.features)[:, 0], atol=1e-6)
    exported = export_onnx(state, PARTY, run.schema, tmp_path / "model.onnx")
    assert exported.onnx.is_file()


def test_an_agent_whose_run_has_not_ended_is_refused(tmp_path: Path) -> None:
    state, run = _agent_state(tmp_path, finished=None)
    with pytest.raises(RunNotFinishedError, match="no end of the run"):
        predict(state, PARTY, run.schema, run.records, tmp_path / "scores.csv")
    assert not (tmp_path / "scores.csv").exists()


def test_an_agent_whose_run_failed_is_refused(tmp_path: Path) -> None:
    state, run = _agent_state(tmp_path, finished="failed")
    with pytest.raises(RunNotFinishedError, match="ended failed"):
        predict(state, PARTY, run.schema, run.records, tmp_path / "scores.csv")


def test_another_party_or_no_schema_digest_is_refused(tmp_path: Path) -> None:
    state, run = _agent_state(tmp_path, finished="completed")
    with pytest.raises(UnknownInstitutionError, match="bank-9"):
        predict(state, "bank-9", run.schema, run.records, tmp_path / "scores.csv")
    other = tmp_path / "other"
    other.mkdir()
    state, run = _agent_state(other, finished="completed", digest=False)
    with pytest.raises(SchemaMismatchError):
        predict(state, PARTY, run.schema, run.records, tmp_path / "scores.csv")
