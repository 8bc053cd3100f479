"""An institution's personalized model as ONNX: ``securefed export --format onnx``
(docs/tabular.md, "Export to ONNX").

:func:`export_onnx` writes ``FILE.onnx`` and a sidecar ``FILE.json`` for one institution of a
finished run, after the checks of ``securefed predict``
(:func:`~securefed.runtime.scoring.load_run_model`, the schema digest). The graph is built
directly from the model's layers with ``onnx.helper`` (``Gemm``, ``Relu``, the binary
``[0, z]`` logits, a float64 ``Softmax``, and for a scaled model the
:class:`~securefed.models.FeatureScaler` first: ``Sub``, ``Div``, and the mean imputation of
missing cells by ``Gather``, ``Sub`` and ``Mul``), not traced by ``torch.onnx.export``: the
tabular models are four layer types, and a hand-built graph depends on neither TorchScript (the
legacy exporter, deprecated for removal) nor onnxscript (the dynamo exporter). Opset 19, IR
version 9.

Two kinds of input (``inputs``):

* ``columns`` (the default): the schema's encoding is IN the graph. One input per feature
  column of the schema, named like it, shape ``[N]``: ``tensor(double)`` for numeric and binary
  columns (NaN = missing), ``tensor(string)`` for categorical ones (a category, or a missing
  marker such as ``""`` or ``NA``). The graph one-hot encodes over the declared categories,
  writes 0 and the ``<name>:missing`` indicator for a missing cell, and checks every cell as the
  import does; outputs ``score`` and ``valid``.
* ``features``: one input ``features``, ``tensor(float)`` ``[N, F]``, the encoded feature
  vector in the order of the sidecar's ``features`` (what ``securefed data import`` writes);
  output ``score``.

``score`` is ``tensor(double)`` ``[N, K]``: the columns of ``securefed predict``'s output (K = 1,
P(label 1), for a binary target; one column per class otherwise), the same numbers within
float32 rounding of the matrix products (tested: at most 1e-5 apart). ``valid`` is
``tensor(bool)`` ``[N]``: false for a row that ``securefed predict`` (the import's checks) would
refuse -- a missing value where the schema says ``forbid``, a category outside the declared
list, an infinite number or one beyond float32, a binary value other than 0 and 1. A graph
cannot raise an error per row: its score for such a row is meaningless and must not be used.

What the graph does NOT do: parse CSV text (``true``/``false`` for a binary column, numbers
as text) or read Parquet integer category codes (pass their decimal text). Its inputs are never
standardised by the caller: a model trained on standardised features (``scaled``, see the
sidecar's ``model``) carries the federation's standardisation as its first layer, so the
graph standardises the import's features itself, with the values saved in the model.

The sidecar (:data:`SIDECAR_FORMAT`) says what to feed and what comes out: the run id, the
party, the schema digest, the inputs with their types and categories, the feature names in
order, the classes and the score columns, the model's architecture and the ``.onnx`` file's
SHA-256.

onnx is an optional dependency (``pip install 'securefed[export]'``), imported only here;
onnxruntime is not needed to export (only to check or serve the file).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from torch import nn

from securefed import __version__
from securefed.data.schema import MISSING_MARKERS, Column, ColumnType, Missing, TabularSchema
from securefed.errors import ConfigError
from securefed.files import PRIVATE_FILE_MODE, write_atomic
from securefed.models import BinaryLogits, FeatureScaler, unwrap
from securefed.runtime.scoring import (
    SCORE_COLUMN,
    OutputExistsError,
    RunModel,
    load_run_model,
    score_columns,
)

__all__ = [
    "EXPORT_INSTALL_HINT",
    "OPSET",
    "SIDECAR_FORMAT",
    "ExportInputs",
    "ExportResult",
    "build_onnx",
    "export_onnx",
    "sidecar_path",
]

EXPORT_INSTALL_HINT = "pip install 'securefed[export]' (make install does)"
SIDECAR_FORMAT = "securefed/onnx-export"
_SIDECAR_VERSION = 1
#: ONNX opset of the graph: 19 is the first with string ``Equal`` (the one-hot encoding).
OPSET = 19
IR_VERSION = 9
VALID_OUTPUT = "valid"
FEATURES_INPUT = "features"
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class ExportInputs(Enum):
    """What the exported graph takes (module docstring)."""

    COLUMNS = "columns"
    FEATURES = "features"


def _onnx() -> Any:
    try:
        import onnx  # noqa: PLC0415 -- optional dependency, imported only when exporting
        import onnx.checker  # noqa: PLC0415
        import onnx.helper  # noqa: PLC0415
        import onnx.numpy_helper  # noqa: PLC0415
        import onnx.shape_inference  # noqa: PLC0415
    except ImportError:
        raise ConfigError(f"exporting to ONNX needs onnx: {EXPORT_INSTALL_HINT}") from None
    return onnx


@dataclass
class _Graph:
    """Nodes and constants of the graph being built; internal values are named ``sf/<n>``."""

    onnx: Any
    nodes: list[Any] = field(default_factory=list)
    initializers: list[Any] = field(default_factory=list)
    count: int = 0

    def _name(self, what: str) -> str:
        self.count += 1
        return f"sf/{what}_{self.count}"

    def const(self, value: npt.ArrayLike, dtype: Any, what: str = "const") -> str:
        name = self._name(what)
        array = np.asarray(value, dtype=dtype)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, *inputs: str, output: str | None = None, **attrs: Any) -> str:
        name = output or self._name(op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [name], **attrs))
        return name


def _column_nodes(g: _Graph, column: Column, axes: str) -> tuple[list[str], str]:
    """The features of one column (``[N, k]`` float tensors, in order) and whether each row's
    cell passes the import's checks (``[N, 1]`` bool)."""
    tensor = g.onnx.TensorProto
    cell = g.op("Unsqueeze", column.name, axes)  # [N, 1]
    indicator = column.missing is Missing.INDICATOR
    if column.type is ColumnType.CATEGORICAL:
        declared = g.const([list(column.categories)], object, "categories")
        onehot = g.op("Cast", g.op("Equal", cell, declared), to=tensor.FLOAT)  # [N, K]
        known = g.op("Cast", g.op("ReduceMax", onehot, axes, keepdims=1), to=tensor.BOOL)
        markers = g.const([list(MISSING_MARKERS)], object, "missing_markers")
        hits = g.op("Cast", g.op("Equal", cell, markers), to=tensor.FLOAT)
        missing = g.op("Cast", g.op("ReduceMax", hits, axes, keepdims=1), to=tensor.BOOL)
        features, ok = [onehot], known
    else:
        missing = g.op("IsNaN", cell)
        zero = g.const(0.0, np.float64, "zero")
        value = g.op("Cast", g.op("Where", missing, zero, cell), to=tensor.FLOAT)
        if column.type is ColumnType.NUMERIC:
            limit = g.const(_FLOAT32_MAX, np.float64, "float32_max")
            ok = g.op("LessOrEqual", g.op("Abs", cell), limit)  # false for NaN and inf
        else:
            one = g.const(1.0, np.float64, "one")
            ok = g.op("Or", g.op("Equal", cell, zero), g.op("Equal", cell, one))
        features = [value]
    if indicator:
        features.append(g.op("Cast", missing, to=tensor.FLOAT))
        ok = g.op("Or", ok, missing)
    return features, ok


def _encoding_nodes(g: _Graph, schema: TabularSchema) -> tuple[list[Any], str, str]:
    """The graph inputs (one per feature column), the features ``[N, F]`` and ``valid``."""
    helper, tensor = g.onnx.helper, g.onnx.TensorProto
    axes = g.const([1], np.int64, "axes")
    inputs, pieces, checks = [], [], []
    for column in schema.features:
        kind = tensor.STRING if column.type is ColumnType.CATEGORICAL else tensor.DOUBLE
        inputs.append(helper.make_tensor_value_info(column.name, kind, ["N"]))
        features, ok = _column_nodes(g, column, axes)
        pieces += features
        checks.append(ok)
    valid = checks[0]
    for ok in checks[1:]:
        valid = g.op("And", valid, ok)
    g.op("Squeeze", valid, axes, output=VALID_OUTPUT)
    return inputs, g.op("Concat", *pieces, axis=1), VALID_OUTPUT


def _scaler_nodes(g: _Graph, scaler: FeatureScaler, x: str) -> str:
    """``scaler(x)`` in float32, as :meth:`FeatureScaler.forward` computes it: ``(x - shift) /
    scale``, times ``1 - missing`` where ``missing`` is each column's indicator column (gathered
    from ``x``) masked to 0 for the columns without one. The buffers become constants."""
    indicator = scaler.indicator.detach().cpu().numpy()
    shift = g.const(scaler.shift.detach().cpu().numpy(), np.float32, "shift")
    scale = g.const(scaler.scale.detach().cpu().numpy(), np.float32, "scale")
    z = g.op("Div", g.op("Sub", x, shift), scale)
    columns = g.const(np.maximum(indicator, 0), np.int64, "indicator")
    has_indicator = g.const(indicator >= 0, np.float32, "has_indicator")
    missing = g.op("Mul", g.op("Gather", x, columns, axis=1), has_indicator)
    keep = g.op("Sub", g.const(1.0, np.float32, "one"), missing)
    return g.op("Mul", z, keep)


def _model_nodes(g: _Graph, model: nn.Module, x: str) -> str:
    """The logits of ``model`` (a Sequential of Linear, ReLU and BinaryLogits, or a scaled
    model: a Sequential of a FeatureScaler and such a Sequential) on ``x``."""
    for layer in unwrap(model).children():
        if isinstance(layer, FeatureScaler):
            x = _scaler_nodes(g, layer, x)
        elif isinstance(layer, nn.Sequential):
            x = _model_nodes(g, layer, x)
        elif isinstance(layer, nn.Linear):
            weight = layer.weight.detach().cpu().numpy()
            inputs = [x, g.const(weight, np.float32, "weight")]
            if layer.bias is not None:
                inputs.append(g.const(layer.bias.detach().cpu().numpy(), np.float32, "bias"))
            x = g.op("Gemm", *inputs, transB=1)
        elif isinstance(layer, nn.ReLU):
            x = g.op("Relu", x)
        elif isinstance(layer, BinaryLogits):  # (N, 1) z -> (N, 2) [0, z]
            zeros = g.op("ConstantOfShape", g.op("Shape", x))  # float32 zeros
            x = g.op("Concat", zeros, x, axis=1)
        else:
            raise ConfigError(f"cannot export a {type(layer).__name__} layer to ONNX")
    return x


def build_onnx(model: RunModel, schema: TabularSchema, inputs: ExportInputs) -> Any:
    """The checked ONNX ``ModelProto`` of ``model`` (see the module docstring).

    Raises:
        ConfigError: onnx is missing; a layer the export does not know; a column named like an
            output (``score`` or ``valid``: use ``inputs = features``).
    """
    onnx = _onnx()
    helper, tensor = onnx.helper, onnx.TensorProto
    g = _Graph(onnx)
    features = model.saved.spec.in_features
    outputs_k = len(score_columns(schema))
    outputs = [helper.make_tensor_value_info(SCORE_COLUMN, tensor.DOUBLE, ["N", outputs_k])]
    if inputs is ExportInputs.COLUMNS:
        clash = sorted({c.name for c in schema.features} & {SCORE_COLUMN, VALID_OUTPUT})
        if clash:
            raise ConfigError(
                f"column {clash[0]!r} has the name of an output of the graph: export with "
                "--inputs features"
            )
        graph_inputs, x, valid = _encoding_nodes(g, schema)
        outputs.append(helper.make_tensor_value_info(valid, tensor.BOOL, ["N"]))
    else:
        x = FEATURES_INPUT
        graph_inputs = [helper.make_tensor_value_info(x, tensor.FLOAT, ["N", features])]
    logits = _model_nodes(g, model.saved.model, x)
    probabilities = g.op("Softmax", g.op("Cast", logits, to=tensor.DOUBLE), axis=1)
    if outputs_k == 1:  # binary: P(label 1), column 1
        one, two = g.const([1], np.int64, "start"), g.const([2], np.int64, "end")
        axis = g.const([1], np.int64, "axis")
        g.op("Slice", probabilities, one, two, axis, output=SCORE_COLUMN)
    else:
        g.op("Identity", probabilities, output=SCORE_COLUMN)
    graph = helper.make_graph(
        g.nodes,
        f"securefed {model.party}",
        graph_inputs,
        outputs,
        g.initializers,
    )
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="securefed",
        producer_version=__version__,
    )
    proto.ir_version = IR_VERSION
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ConfigError(f"the ONNX graph of {model.party!r} does not check: {exc}") from None
    return proto


def sidecar_path(output: Path) -> Path:
    """The sidecar of ``FILE.onnx``: ``FILE.json`` beside it."""
    return output.with_suffix(".json")


def _sidecar(
    model: RunModel, schema: TabularSchema, inputs: ExportInputs, output: Path, digest: str
) -> dict[str, Any]:
    spec = model.saved.spec
    graph_inputs: list[dict[str, Any]]
    if inputs is ExportInputs.COLUMNS:
        graph_inputs = [
            {
                "name": c.name,
                "type": c.type.value,
                "onnx_type": "string" if c.type is ColumnType.CATEGORICAL else "double",
                "missing": c.missing.value,
                "categories": list(c.categories),
            }
            for c in schema.features
        ]
        missing = "double inputs: NaN; string inputs: one of " + ", ".join(
            repr(m) for m in MISSING_MARKERS
        )
    else:
        graph_inputs = [
            {
                "name": FEATURES_INPUT,
                "onnx_type": "float",
                "shape": ["N", len(schema.feature_names)],
            }
        ]
        missing = "encoded by the import: 0 in the feature and 1 in its ':missing' indicator"
    return {
        "format": SIDECAR_FORMAT,
        "version": _SIDECAR_VERSION,
        "onnx": output.name,
        "onnx_sha256": digest,
        "opset": OPSET,
        "run_id": model.run_id,
        "party": model.party,
        "tenant": model.tenant,
        "config_sha256": model.saved.metadata.get("config_sha256"),
        "schema_sha256": model.schema_sha256,
        "target": schema.target,
        "classes": list(schema.classes),
        "inputs_kind": inputs.value,
        "inputs": graph_inputs,
        "missing": missing,
        "features": list(schema.feature_names),
        "outputs": {
            SCORE_COLUMN: {"onnx_type": "double", "columns": list(score_columns(schema))},
            **(
                {
                    VALID_OUTPUT: {
                        "onnx_type": "bool",
                        "meaning": "false: securefed predict would "
                        "refuse the row; its score must not be used",
                    }
                }
                if inputs is ExportInputs.COLUMNS
                else {}
            ),
        },
        "model": {
            "kind": spec.kind.value,
            "in_features": spec.in_features,
            "num_classes": spec.num_classes,
            "hidden": None if spec.hidden is None else list(spec.hidden),
            "scaled": spec.scaled,
        },
        "software_version": __version__,
    }


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote."""

    onnx: Path
    sidecar: Path
    model: RunModel
    inputs: ExportInputs


def export_onnx(
    run_dir: str | os.PathLike[str],
    party: str,
    schema: TabularSchema,
    output: str | os.PathLike[str],
    *,
    inputs: ExportInputs = ExportInputs.COLUMNS,
    force: bool = False,
    schema_source: str = "the schema",
) -> ExportResult:
    """Write institution ``party``'s model of the run at ``run_dir`` to ``output`` (``.onnx``,
    mode 0600: it holds the model's weights, the institution's secret like its model file) and
    its sidecar ``.json`` beside it (mode 0644: no weights, what a serving team needs to know).

    Both files are written atomically, the ``.onnx`` first; if the sidecar cannot be written the
    new ``.onnx`` is removed again (with ``force``, a replaced one is not restored).

    Raises:
        OutputExistsError: ``output`` or its sidecar exists and not ``force``.
        RunNotFinishedError, UnknownInstitutionError, SchemaMismatchError: as ``predict``.
        ConfigError: ``output`` does not end in ``.onnx``; onnx is missing; the graph cannot be
            built (see :func:`build_onnx`); a file cannot be written.
    """
    target = Path(output)
    if target.suffix.lower() != ".onnx":
        raise ConfigError(f"{target}: the output of --format onnx must end in .onnx")
    sidecar = sidecar_path(target)
    for path in (target, sidecar):
        if path.exists() and not force:
            raise OutputExistsError(f"{path}: exists; give --force to replace it")
    model = load_run_model(run_dir, party)
    model.check_schema(schema, where=schema_source)
    data = build_onnx(model, schema, inputs).SerializeToString()
    digest = hashlib.sha256(data).hexdigest()
    document = _sidecar(model, schema, inputs, target, digest)
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    write_atomic(target, data, mode=PRIVATE_FILE_MODE, overwrite=force)
    try:
        write_atomic(sidecar, text.encode("utf-8"), overwrite=force)
    except ConfigError:
        target.unlink(missing_ok=True)
        raise
    return ExportResult(target, sidecar, model, inputs)
