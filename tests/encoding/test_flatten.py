"""flatten, unflatten, ModelLayout: exact round trips, canonical order and JSON, batched errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from securefed.encoding import (
    LAYOUT_FORMAT,
    CodecConfig,
    DitherStream,
    FixedPointCodec,
    ModelLayout,
    RingBits,
    TensorSpec,
    flatten,
    ring_sum,
    unflatten,
)
from securefed.errors import ConfigError

MakeDither = Callable[..., DitherStream]
State = dict[str, npt.NDArray[Any]]


def mixed_state() -> State:
    return {
        "fc.weight": np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
        "fc.bias": np.array([0.1, -0.2, 65504.0, -0.0], dtype=np.float16),
        "bn.running_var": np.array(2.5),  # float64 scalar, shape ()
        "bn.num_batches_tracked": np.array(123456789, dtype=np.int64),  # int64 scalar
        "emb.index": np.array([[-(2**53), 2**53], [-7, 0]], dtype=np.int64),
        "mask": np.array([True, False, True]),
        "pixels": np.array([0, 255, 17], dtype=np.uint8),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }


def assert_same_state(restored: State, original: State) -> None:
    assert list(restored) == sorted(original)
    for name, array in original.items():
        assert restored[name].dtype == array.dtype, name
        assert restored[name].shape == array.shape, name
        np.testing.assert_array_equal(restored[name], array, err_msg=name)


def test_mixed_round_trip_is_exact() -> None:
    state = mixed_state()
    layout = ModelLayout.from_state(state)
    vector = flatten(state, layout)
    assert vector.dtype == np.float64
    assert vector.shape == (layout.size,) == (6 + 4 + 1 + 1 + 4 + 3 + 3,)
    assert_same_state(unflatten(vector, layout), state)


def test_order_is_by_name_not_insertion() -> None:
    state = mixed_state()
    reversed_state = dict(reversed(list(state.items())))
    layout = ModelLayout.from_state(state)
    assert ModelLayout.from_state(reversed_state) == layout
    assert layout.names == tuple(sorted(state))
    assert np.array_equal(flatten(reversed_state, layout), flatten(state, layout))
    expected = np.concatenate([state[name].reshape(-1).astype(np.float64) for name in layout.names])
    assert np.array_equal(flatten(state, layout), expected)


def test_order_is_code_point_order() -> None:
    state = {name: np.zeros(1) for name in ["a_b", "a.b", "a", "B", "é"]}
    assert ModelLayout.from_state(state).names == ("B", "a", "a.b", "a_b", "é")


dtypes = st.sampled_from(
    ["float16", "float32", "float64", "int8", "int32", "int64", "uint8", "uint64", "bool"]
)


@st.composite
def states(draw: st.DrawFn) -> State:
    names = draw(st.sets(st.text(min_size=1, max_size=6), min_size=1, max_size=5))
    state: State = {}
    for name in names:
        dtype = np.dtype(draw(dtypes))
        shape = draw(array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3))
        elements = None
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            elements = st.integers(max(int(info.min), -(2**53)), min(int(info.max), 2**53))
        state[name] = draw(arrays(dtype, shape, elements=elements))
    return state


@settings(deadline=None)
@given(states())
def test_any_state_round_trips_exactly(state: State) -> None:
    layout = ModelLayout.from_state(state)
    restored = unflatten(flatten(state, layout), layout)
    assert list(restored) == sorted(state)
    for name, array in state.items():
        assert restored[name].dtype == array.dtype
        assert restored[name].shape == array.shape
        np.testing.assert_array_equal(restored[name], array)  # NaN == NaN here
    assert ModelLayout.from_json(layout.to_json()) == layout


def test_outputs_are_copies() -> None:
    state = {"w": np.ones(3)}
    layout = ModelLayout.from_state(state)
    vector = flatten(state, layout)
    vector[0] = 5.0
    assert state["w"][0] == 1.0
    restored = unflatten(vector, layout)
    restored["w"][1] = 7.0
    assert vector[1] == 1.0


def test_numpy_scalars_count_as_shape_empty_arrays() -> None:
    state = {"s": np.float32(1.5)}
    layout = ModelLayout.from_state(state)  # type: ignore[arg-type]
    assert layout.tensors == (TensorSpec("s", (), "float32"),)
    assert flatten(state, layout).tolist() == [1.5]  # type: ignore[arg-type]


# --- layout JSON and digest ----------------------------------------------------------------------

KAT_LAYOUT = ModelLayout(
    (
        TensorSpec("bn.num_batches_tracked", (), "int64"),
        TensorSpec("conv.bias", (8,), "float32"),
        TensorSpec("conv.weight", (8, 1, 3, 3), "float32"),
    )
)
KAT_JSON = (
    '{"format":"securefed/layout/v1","tensors":['
    '{"dtype":"int64","name":"bn.num_batches_tracked","shape":[]},'
    '{"dtype":"float32","name":"conv.bias","shape":[8]},'
    '{"dtype":"float32","name":"conv.weight","shape":[8,1,3,3]}]}'
)
KAT_DIGEST = "df9af51dc2f665d11ac5991bd849c28e6da63e835ba4607ae0a0c7cd9b01903d"


def test_layout_json_known_answer() -> None:
    assert KAT_LAYOUT.to_json() == KAT_JSON
    assert KAT_LAYOUT.digest() == KAT_DIGEST
    assert KAT_LAYOUT.size == 1 + 8 + 72


def test_layout_json_round_trip_and_whitespace_independence() -> None:
    assert ModelLayout.from_json(KAT_JSON) == KAT_LAYOUT
    assert ModelLayout.from_json(KAT_JSON.encode("ascii")) == KAT_LAYOUT
    pretty = json.dumps(json.loads(KAT_JSON), indent=4, sort_keys=False)
    parsed = ModelLayout.from_json(pretty)
    assert parsed == KAT_LAYOUT
    assert parsed.digest() == KAT_DIGEST


def test_layout_json_is_ascii_and_escapes_names() -> None:
    layout = ModelLayout((TensorSpec('ü"\n', (1,), "float64"),))
    text = layout.to_json()
    assert text.isascii()
    assert ModelLayout.from_json(text) == layout


def test_digest_changes_with_any_field() -> None:
    variants = [
        ModelLayout((TensorSpec("conv.bias", (8,), "float32"),)),
        ModelLayout((TensorSpec("conv.bias", (8,), "float64"),)),
        ModelLayout((TensorSpec("conv.bias", (8, 1), "float32"),)),
        ModelLayout((TensorSpec("conv.biaz", (8,), "float32"),)),
    ]
    assert len({layout.digest() for layout in variants}) == len(variants)


def _spec_json(name: str = "a", shape: Any = None, dtype: str = "float32") -> dict[str, Any]:
    return {"dtype": dtype, "name": name, "shape": [2] if shape is None else shape}


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("not json", id="not-json"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param("[]", id="not-object"),
        pytest.param(json.dumps({"format": "other/v9", "tensors": []}), id="format"),
        pytest.param(json.dumps({"format": LAYOUT_FORMAT}), id="missing-tensors"),
        pytest.param(
            json.dumps({"format": LAYOUT_FORMAT, "tensors": [], "extra": 1}), id="extra-key"
        ),
        pytest.param(json.dumps({"format": LAYOUT_FORMAT, "tensors": []}), id="empty"),
        pytest.param(json.dumps({"format": LAYOUT_FORMAT, "tensors": {}}), id="tensors-object"),
        pytest.param(
            '{"format":"securefed/layout/v1","format":"securefed/layout/v1","tensors":[]}',
            id="duplicate-key",
        ),
        *[
            pytest.param(json.dumps({"format": LAYOUT_FORMAT, "tensors": tensors}), id=case)
            for case, tensors in [
                ("shape-bool", [_spec_json(shape=[True])]),
                ("shape-float", [_spec_json(shape=[2.0])]),
                ("shape-negative", [_spec_json(shape=[-1])]),
                ("shape-int", [_spec_json(shape=2)]),
                ("dtype-unknown", [_spec_json(dtype="complex64")]),
                ("name-empty", [_spec_json(name="")]),
                ("name-int", [_spec_json(name=3)]),  # type: ignore[arg-type]
                ("unsorted", [_spec_json(name="b"), _spec_json(name="a")]),
                ("duplicate-name", [_spec_json(), _spec_json()]),
                ("spec-extra-key", [{**_spec_json(), "offset": 0}]),
                ("spec-not-object", [["a", [2], "float32"]]),
            ]
        ],
    ],
)
def test_bad_layout_json_is_rejected(text: str | bytes) -> None:
    with pytest.raises(ConfigError):
        ModelLayout.from_json(text)


@pytest.mark.parametrize(
    ("name", "shape", "dtype"),
    [
        ("", (1,), "float32"),
        (None, (1,), "float32"),
        ("a", [1], "float32"),
        ("a", (-1,), "float32"),
        ("a", (True,), "float32"),
        ("a", (1.0,), "float32"),
        ("a", (1,), "complex64"),
        ("a", (1,), "object"),
        ("a", (1,), np.float32),
    ],
)
def test_invalid_tensor_specs(name: object, shape: object, dtype: object) -> None:
    with pytest.raises(ConfigError):
        TensorSpec(name, shape, dtype)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "tensors",
    [
        (),
        [TensorSpec("a", (1,), "float32")],
        (TensorSpec("b", (1,), "float32"), TensorSpec("a", (1,), "float32")),
        (TensorSpec("a", (1,), "float32"), TensorSpec("a", (2,), "float64")),
        ("a",),
    ],
)
def test_invalid_layouts(tensors: object) -> None:
    with pytest.raises(ConfigError):
        ModelLayout(tensors)  # type: ignore[arg-type]


def test_from_state_lists_every_problem() -> None:
    state: dict[Any, Any] = {
        "ok": np.zeros(2),
        "complex": np.zeros(2, dtype=np.complex64),
        "list": [1.0, 2.0],
        "": np.zeros(1),
        3: np.zeros(1),
    }
    with pytest.raises(ConfigError, match=r"\(4 problem\(s\)\)") as info:
        ModelLayout.from_state(state)
    message = str(info.value)
    for fragment in ("'complex'", "'list'", "key ''", "key 3"):
        assert fragment in message
    with pytest.raises(ConfigError):
        ModelLayout.from_state({})
    with pytest.raises(ConfigError):
        ModelLayout.from_state([("a", np.zeros(1))])  # type: ignore[arg-type]


# --- flatten errors ------------------------------------------------------------------------------


def test_mismatches_are_all_reported_at_once() -> None:
    state = mixed_state()
    layout = ModelLayout.from_state(state)
    state.pop("mask")  # missing
    state["extra.weight"] = np.zeros(2)  # unexpected
    state["fc.weight"] = np.zeros((3, 2), dtype=np.float32)  # wrong shape
    state["fc.bias"] = state["fc.bias"].astype(np.float32)  # wrong dtype
    state["pixels"] = [0, 255, 17]  # type: ignore[assignment]  # not an array
    state["emb.index"] = np.array([[2**53 + 1, 0], [0, 0]], dtype=np.int64)  # not exact
    with pytest.raises(ConfigError, match=r"\(6 problem\(s\)\)") as info:
        flatten(state, layout)
    message = str(info.value)
    for fragment in (
        "missing tensor 'mask'",
        "unexpected tensor 'extra.weight'",
        "tensor 'fc.weight': shape (3, 2) != layout (2, 3)",
        "tensor 'fc.bias': dtype float32 != layout float16",
        "tensor 'pixels': not a numpy array",
        "tensor 'emb.index': integer values beyond +-2**53",
    ):
        assert fragment in message


@pytest.mark.parametrize(
    "array",
    [
        np.array([2**53 + 1], dtype=np.int64),
        np.array([-(2**53) - 1], dtype=np.int64),
        np.array([2**63], dtype=np.uint64),
        np.array([np.iinfo(np.int64).min], dtype=np.int64),
    ],
)
def test_integers_beyond_2_53_are_rejected(array: npt.NDArray[Any]) -> None:
    state = {"big": array}
    with pytest.raises(ConfigError, match="2\\*\\*53"):
        flatten(state, ModelLayout.from_state(state))


def test_flatten_argument_types() -> None:
    layout = ModelLayout.from_state({"a": np.zeros(1)})
    with pytest.raises(ConfigError):
        flatten({"a": np.zeros(1)}, None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        flatten([("a", np.zeros(1))], layout)  # type: ignore[arg-type]


# --- unflatten errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 2, 4])
def test_wrong_vector_length_is_rejected(length: int) -> None:
    layout = ModelLayout.from_state({"w": np.zeros(3)})
    with pytest.raises(ConfigError, match="needs 3"):
        unflatten(np.zeros(length), layout)


@pytest.mark.parametrize(
    "vector",
    [np.zeros(3, dtype=np.float32), np.zeros((3, 1)), np.zeros(3, dtype=np.int64), [0.0, 0.0, 0.0]],
)
def test_vector_must_be_flat_float64(vector: object) -> None:
    layout = ModelLayout.from_state({"w": np.zeros(3)})
    with pytest.raises(ConfigError, match="1-D float64"):
        unflatten(vector, layout)  # type: ignore[arg-type]


def test_unflatten_lists_every_lossy_tensor() -> None:
    layout = ModelLayout(
        (
            TensorSpec("a_int", (3,), "int64"),
            TensorSpec("b_uint8", (2,), "uint8"),
            TensorSpec("c_bool", (2,), "bool"),
            TensorSpec("d_half", (2,), "float16"),
            TensorSpec("e_float", (2,), "float32"),
            TensorSpec("f_int32", (1,), "int32"),
        )
    )
    vector = np.array(
        [
            *(1.5, np.nan, 2.0**54),  # not integral, NaN, beyond 2**53
            *(256.0, -1.0),  # out of uint8 range
            *(2.0, 1.0),  # 2 is not a bool
            *(1e6, 1.0),  # overflows float16
            *(np.nan, np.inf),  # non-finite floats pass through unchanged
            3.0,
        ]
    )
    with pytest.raises(ConfigError, match=r"\(4 problem\(s\)\)") as info:
        unflatten(vector, layout)
    message = str(info.value)
    assert "tensor 'a_int': 3 value(s) are not integers" in message
    assert "tensor 'b_uint8': 2 value(s)" in message
    assert "tensor 'c_bool': 1 value(s)" in message
    assert "tensor 'd_half': 1 finite value(s) overflow float16" in message
    assert "1.5" not in message  # counts only, never the values


def test_unflatten_rounds_floats_and_passes_non_finite_through() -> None:
    layout = ModelLayout((TensorSpec("w", (4,), "float32"),))
    restored = unflatten(np.array([0.1, np.nan, -np.inf, 3.4e38]), layout)["w"]
    assert restored.dtype == np.float32
    assert restored[0] == np.float32(0.1)
    assert np.isnan(restored[1])
    assert restored[2] == -np.inf
    assert np.isfinite(restored[3])


def test_integer_tensors_accept_exact_edges() -> None:
    layout = ModelLayout(
        (
            TensorSpec("i", (2,), "int64"),
            TensorSpec("u", (2,), "uint8"),
            TensorSpec("z", (1,), "int8"),
        )
    )
    vector = np.array([-(2.0**53), 2.0**53, 0.0, 255.0, -0.0])
    restored = unflatten(vector, layout)
    assert restored["i"].tolist() == [-(2**53), 2**53]
    assert restored["u"].tolist() == [0, 255]
    assert restored["z"].tolist() == [0]


# --- end to end ----------------------------------------------------------------------------------


def test_flatten_encode_sum_decode_unflatten(make_dither: MakeDither) -> None:
    """Three institutions: their summed, encoded updates come back as the summed state."""
    codec = FixedPointCodec(CodecConfig.default())
    states = [
        {
            "w": np.linspace(-1.0, 1.0, 6, dtype=np.float32).reshape(2, 3) * (k + 1),
            "b": np.array([0.5 * k - 1.0]),
        }
        for k in range(3)
    ]
    layout = ModelLayout.from_state(states[0])
    encoded = [
        codec.encode(flatten(state, layout), dither=make_dither(k))
        for k, state in enumerate(states)
    ]
    total = codec.decode(ring_sum(encoded, ring=RingBits.BITS32), n_terms=3)
    expected = sum(flatten(state, layout) for state in states)
    assert np.all(np.abs(total - expected) <= codec.decode_error_bound(3))
    summed = unflatten(total, layout)
    assert summed["w"].dtype == np.float32
    assert summed["w"].shape == (2, 3)
