"""Scoring new records with an institution's personalized model: ``securefed predict``
(docs/tabular.md, "Scoring new records").

A finished run (``securefed run``) leaves each institution's final personalized model in
``<run>/models/<party>.safetensors``, with its architecture and -- when the institution's table
was imported with ``securefed data import`` -- the schema digest of that table in the file's
metadata (:data:`~securefed.runtime.federated.SCHEMA_METADATA`). :func:`load_run_model` finds
the institution by its party id in the run's ``metrics.json`` (never by parsing the name) and
rebuilds its model from the file alone; :meth:`RunModel.check_schema` refuses a schema whose
digest is not the one the model's data had. :func:`predict` then encodes a CSV or Parquet file
with the import's own code (:func:`~securefed.data.tabular.encode_records`: the same checks,
errors and feature order; the target column may be absent) and writes the scores, all or
nothing.

The output has one row per input record, in input order: the id columns asked for (columns of
the schema's ``drop`` list, carried through unchanged so that the scores can be joined back; a
CSV's ids as their exact text) or, without any, ``row`` (the 1-based data row, as errors count
rows); then the scores: ``score`` = P(label 1) for a binary target, or one column
``score=<class>`` per class, P(that class), for a categorical one. Scores are the softmax of the
model's logits in float64 (:func:`~securefed.models.class_probabilities`), exactly what
``metrics.json``'s credit metrics were computed from.

Errors are :class:`~securefed.errors.ConfigError` subclasses (exit status 2 on the command
line), each raised before anything is written: :class:`RunNotFinishedError`,
:class:`UnknownInstitutionError`, :class:`SchemaMismatchError`, :class:`OutputExistsError`, and
the import's :class:`~securefed.data.tabular.TabularDataError` naming file, row and column.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from securefed.data.schema import ColumnType, TabularSchema
from securefed.data.tabular import INSTALL_HINT, InputFormat, encode_records
from securefed.data.tabular_store import read_schema_digest, record_file
from securefed.errors import ConfigError
from securefed.files import PRIVATE_FILE_MODE, write_atomic
from securefed.models import ModelKind, SavedModel, class_probabilities, load_saved_model
from securefed.runtime.federated import (
    METRICS_FILE,
    MODELS_DIR,
    RUN_FILE,
    SCHEMA_METADATA,
    partial_directory,
)
from securefed.runtime.nodes import MODEL_FILE as STATE_MODEL_FILE

__all__ = [
    "OutputExistsError",
    "PredictResult",
    "RunModel",
    "RunNotFinishedError",
    "SchemaMismatchError",
    "ScoringError",
    "UnknownInstitutionError",
    "load_run_model",
    "predict",
    "score_columns",
    "score_features",
]

#: Rows scored per forward pass (bounds memory on large files; the scores do not depend on it).
BATCH_ROWS = 65536
ROW_COLUMN = "row"
SCORE_COLUMN = "score"


class ScoringError(ConfigError):
    """A run, institution, schema or output that scoring or export cannot use."""


class RunNotFinishedError(ScoringError):
    """No finished run at the directory (absent, still ``<run>.partial``, or without
    ``metrics.json``), or a run that ended ``failed``: no round produced an aggregate, so its
    models are not personalized."""


class UnknownInstitutionError(ScoringError):
    """The run has no institution of that party id."""


class SchemaMismatchError(ScoringError):
    """The schema is not the one the institution's data was imported under (another digest),
    or the run does not record one (its data was not imported with a schema)."""


class OutputExistsError(ScoringError):
    """The output file exists and ``force`` was not given."""


@dataclass(frozen=True)
class RunModel:
    """One institution's final personalized model of a finished run.

    ``party`` is its party id, ``tenant`` its tenant index (None if ``metrics.json`` does not
    say), ``schema_sha256`` the digest of the schema its table was imported under (from the
    model file, else from the import record next to the run's data; None if neither has one).
    """

    run_dir: Path
    run_id: str | None
    party: str
    tenant: int | None
    path: Path
    saved: SavedModel
    schema_sha256: str | None

    def check_schema(self, schema: TabularSchema, *, where: str = "the schema") -> None:
        """Refuse ``schema`` unless it is the one this model's data was imported under.

        Raises:
            SchemaMismatchError: the run records no schema digest for this institution, another
                digest, or (never with equal digests) another number of features or classes.
            ScoringError: the model is the image CNN.
        """
        spec = self.saved.spec
        if spec.kind is ModelKind.CNN:
            raise ScoringError(
                f"{self.path}: the model of {self.party!r} is the image CNN; scoring and export "
                'take tabular models (model = "logistic" or "mlp")'
            )
        if self.schema_sha256 is None:
            raise SchemaMismatchError(
                f"{self.path}: the run does not record which schema the data of {self.party!r} "
                "was imported under (its table was not imported with securefed data import), so "
                f"{where} cannot be checked against it"
            )
        if schema.digest != self.schema_sha256:
            raise SchemaMismatchError(
                f"{where}: schema sha256 {schema.digest[:16]}... is not the schema that the data "
                f"of {self.party!r} was imported under ({self.schema_sha256[:16]}...); score with "
                "the federation's schema file"
            )
        if len(schema.feature_names) != spec.in_features or len(schema.classes) != (
            spec.num_classes
        ):
            raise SchemaMismatchError(
                f"{where}: {len(schema.feature_names)} features and {len(schema.classes)} "
                f"classes, but the model of {self.party!r} takes {spec.in_features} and gives "
                f"{spec.num_classes}"
            )


def _finished(run_dir: Path) -> dict[str, Any]:
    """The ``metrics.json`` of the finished run at ``run_dir`` (:class:`RunNotFinishedError`)."""
    in_progress = run_dir.name.endswith(".partial") and run_dir.is_dir()
    partial = run_dir if in_progress else partial_directory(run_dir)
    if in_progress or (not run_dir.exists() and partial.is_dir()):
        raise RunNotFinishedError(
            f"{run_dir}: the run has not finished ({partial} holds it: still running, or "
            "killed -- continue it with securefed run --resume)"
        )
    if not run_dir.is_dir():
        raise RunNotFinishedError(f"{run_dir}: no run directory")
    path = run_dir / METRICS_FILE
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunNotFinishedError(
            f"{run_dir}: no {METRICS_FILE}: not the directory of a finished run"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ScoringError(f"{path}: unreadable ({exc})") from None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("clients"), list):
        raise ScoringError(f"{path}: not a securefed run record (no clients)")
    status = metrics.get("status", "completed")
    if status not in ("completed", "degraded"):
        raise RunNotFinishedError(
            f"{run_dir}: the run ended {status}: no round produced an aggregate, so no "
            "institution has a personalized model"
        )
    return metrics


def _run_id(run_dir: Path) -> str | None:
    try:
        document = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    run_id = document.get("run_id") if isinstance(document, dict) else None
    return run_id if isinstance(run_id, str) else None


def _finished_statuses(ledger: Path) -> list[str]:
    """The ``status`` of every ``run.finished`` entry of a ledger file (empty if none)."""
    statuses = []
    with ledger.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                raise ScoringError(f"{ledger}: not a securefed ledger") from None
            if isinstance(entry, dict) and entry.get("event") == "run.finished":
                payload = entry.get("payload")
                statuses.append(str(payload.get("status")) if isinstance(payload, dict) else "")
    return statuses


def _load_state_model(state: Path, party: str) -> RunModel:
    """``party``'s model kept in a deployment agent's state directory (``model.safetensors``,
    saved after every change), once the agent's own ledger records the end of the run."""
    ledger = state / "ledgers" / f"{party}.jsonl"
    if not ledger.is_file():
        raise UnknownInstitutionError(
            f"{state}: an agent's state directory without a ledger of {party!r} (give the party "
            "id the agent ran as)"
        )
    statuses = _finished_statuses(ledger)
    if not statuses:
        raise RunNotFinishedError(
            f"{state}: the agent's ledger records no end of the run yet (still running, or "
            "killed): its model is not final"
        )
    if statuses[-1] not in ("completed", "degraded"):
        raise RunNotFinishedError(
            f"{state}: the agent's run ended {statuses[-1]}: its model is not a final "
            "personalized model"
        )
    path = state / STATE_MODEL_FILE
    saved = load_saved_model(path)
    if saved.metadata.get("party", party) != party:
        raise UnknownInstitutionError(
            f"{path}: the model of {saved.metadata.get('party')!r}, not of {party!r}"
        )
    digest = saved.metadata.get(SCHEMA_METADATA)
    return RunModel(state, None, party, None, path, saved, digest)


def load_run_model(run_dir: str | os.PathLike[str], party: str) -> RunModel:
    """Institution ``party``'s final personalized model of the finished run at ``run_dir`` --
    a simulation's run directory, or a deployment agent's state directory (``--state`` of
    ``securefed agent``: its ``model.safetensors`` once its ledger records ``run.finished``
    with status completed or degraded).

    ``party`` is a party id of the run (``metrics.json``'s ``clients[].id``, the roster's).

    Raises:
        RunNotFinishedError: no finished run there (see the class).
        UnknownInstitutionError: no institution ``party`` in the run (the message lists them).
        ConfigError: its model file is missing or unreadable, or records no architecture.
    """
    directory = Path(run_dir)
    if (directory / STATE_MODEL_FILE).is_file() and not (directory / METRICS_FILE).exists():
        return _load_state_model(directory, party)
    metrics = _finished(directory)
    clients = [c for c in metrics["clients"] if isinstance(c, dict)]
    client = next((c for c in clients if c.get("id") == party), None)
    if client is None:
        known = ", ".join(str(c.get("id")) for c in clients) or "none"
        raise UnknownInstitutionError(
            f"{directory}: no institution {party!r} in this run (institutions: {known})"
        )
    path = directory / MODELS_DIR / f"{party}.safetensors"
    saved = load_saved_model(path)
    tenant = client.get("tenant")
    tenant = tenant if isinstance(tenant, int) and not isinstance(tenant, bool) else None
    digest = saved.metadata.get(SCHEMA_METADATA)
    data_directory = metrics.get("data_directory")
    if (  # a run from before model files recorded it: the import record next to the data
        digest is None
        and tenant is not None
        and isinstance(data_directory, str)
        and record_file(Path(data_directory), tenant).is_file()
    ):
        digest = read_schema_digest(data_directory, tenant)
    return RunModel(directory, _run_id(directory), party, tenant, path, saved, digest)


def score_columns(schema: TabularSchema) -> tuple[str, ...]:
    """The names of the score columns: ``score`` for a binary target, else ``score=<class>``
    for every class in label order."""
    if schema.target_column.type is ColumnType.BINARY:
        return (SCORE_COLUMN,)
    return tuple(f"{SCORE_COLUMN}={c}" for c in schema.classes)


def score_features(
    saved: SavedModel, features: npt.NDArray[np.float32], *, binary: bool
) -> npt.NDArray[np.float64]:
    """The scores of encoded records: float64 ``(n, 1)`` P(label 1) when ``binary``, else
    ``(n, classes)`` class probabilities (the softmax of the logits, taken in float64)."""
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    probabilities = class_probabilities(saved.model, x, batch_size=BATCH_ROWS)
    return probabilities[:, 1:2] if binary else probabilities


@dataclass(frozen=True)
class PredictResult:
    """What :func:`predict` wrote: ``rows`` scored records into ``output``, with ``columns``."""

    output: Path
    rows: int
    columns: tuple[str, ...]
    model: RunModel


def _pyarrow() -> Any:
    try:
        import pyarrow  # noqa: PLC0415 -- optional dependency, imported only when needed
        import pyarrow.csv  # noqa: PLC0415
        import pyarrow.parquet  # noqa: PLC0415
    except ImportError:
        raise ConfigError(f"scoring CSV or Parquet files needs pyarrow: {INSTALL_HINT}") from None
    return pyarrow


def _serialise(pa: Any, table: Any, kind: InputFormat) -> bytes:
    sink = pa.BufferOutputStream()
    if kind is InputFormat.CSV:
        pa.csv.write_csv(table, sink)
    else:
        pa.parquet.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


def _output_format(output: Path) -> InputFormat:
    name = output.name.lower()
    if name.endswith(".csv"):
        return InputFormat.CSV
    if name.endswith((".parquet", ".pq")):
        return InputFormat.PARQUET
    raise ConfigError(f"{output}: the output must be a .csv, .parquet or .pq file")


def predict(
    run_dir: str | os.PathLike[str],
    party: str,
    schema: TabularSchema,
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    ids: Sequence[str] = (),
    force: bool = False,
    schema_source: str = "the schema",
) -> PredictResult:
    """Score the records of ``input_path`` (CSV or Parquet, the institution's schema; the target
    may be absent) with institution ``party``'s model of the run at ``run_dir``; write
    ``output`` (``.csv`` or ``.parquet``), all or nothing, mode 0600.

    ``ids``: columns of ``schema.drop`` to carry into the output (see the module docstring).
    ``force``: replace an existing ``output``. ``schema_source`` names the schema in messages.

    Raises:
        OutputExistsError: ``output`` exists and not ``force`` (checked first).
        RunNotFinishedError, UnknownInstitutionError, SchemaMismatchError: see the classes.
        TabularDataError: a record breaks the schema (file, row and column named).
        ConfigError: an output of another format, the output is the input, an id column that
            is not dropped by the schema or clashes with an output column, pyarrow missing, or
            the output cannot be written.
    """
    source, target = Path(input_path), Path(output)
    kind = _output_format(target)
    if target.exists() and not force:
        raise OutputExistsError(f"{target}: exists; give --force to replace it")
    if target.exists() and source.exists() and target.resolve() == source.resolve():
        raise ConfigError(f"{target}: the output would replace the input")
    columns = score_columns(schema)
    clash = sorted(set(ids) & {ROW_COLUMN, *columns})
    if clash:
        raise ConfigError(f"id column {clash[0]!r} has the name of an output column")
    model = load_run_model(run_dir, party)
    model.check_schema(schema, where=schema_source)
    pa = _pyarrow()
    records = encode_records(source, schema, keep=ids)
    binary = schema.target_column.type is ColumnType.BINARY
    scores = score_features(model.saved, records.features, binary=binary)
    table = (
        records.kept
        if ids
        else pa.table({ROW_COLUMN: pa.array(np.arange(1, records.rows + 1, dtype=np.int64))})
    )
    for j, name in enumerate(columns):
        table = table.append_column(name, pa.array(scores[:, j]))
    try:
        write_atomic(target, _serialise(pa, table, kind), mode=PRIVATE_FILE_MODE, overwrite=force)
    except ConfigError:
        if not force and target.exists():
            raise OutputExistsError(f"{target}: exists; give --force to replace it") from None
        raise
    return PredictResult(target, records.rows, tuple(table.column_names), model)
