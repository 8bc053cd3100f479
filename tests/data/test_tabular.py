"""securefed data import: CSV and Parquet against a declared schema, typed errors naming file, row
and column, nothing written on failure, CSV == Parquet, and a canonical schema digest. The command
line is tested in tests/test_cli_data.py (it imports torch, slow to load)."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from securefed.data import load_tenants
from securefed.data.layout import DataFormatError
from securefed.data.partition import split_rows
from securefed.data.schema import (
    Column,
    ColumnType,
    Missing,
    SchemaError,
    TabularSchema,
    load_schema,
    parse_schema,
)
from securefed.data.tabular import (
    Problem,
    TabularDataError,
    encode_file,
    encode_records,
    import_tabular,
)
from securefed.data.tabular_store import load_import_record, read_schema_digest
from securefed.errors import ConfigError

SCHEMA = """\
# A credit application table.
target = "default"
drop = ["id"]

[split]
test_fraction = 0.25
seed = 3

[[column]]
name = "age"
type = "numeric"

[[column]]
name = "income"
type = "numeric"
missing = "indicator"

[[column]]
name = "housing"
type = "categorical"
categories = ["own", "rent", "free"]

[[column]]
name = "purpose"
type = "categorical"
categories = ["car", "home"]
missing = "indicator"

[[column]]
name = "has_phone"
type = "binary"

[[column]]
name = "default"
type = "binary"
"""

# The same schema: other comments, whitespace and key order, another drop list and split.
SCHEMA_RESTYLED = """\
version = 1
drop = ["customer_number", "branch"]
target = "default"
[split]
seed = 99
[[column]]
type = "numeric"
name = "age"
missing = "forbid"
[[column]]
missing = "indicator"
name   =   "income"
type = "numeric"
[[column]]
categories = [ "own",  "rent", "free" ]
type = "categorical"
name = "housing"
[[column]]
name = "purpose"
missing = "indicator"
categories = ["car", "home"]
type = "categorical"
[[column]]
name = "has_phone"
type = "binary"   # 0/1
[[column]]
type = "binary"
name = "default"
"""

HEADER = ("id", "age", "income", "housing", "purpose", "has_phone", "default")
ROWS = [
    ("c1", 35, 52000.5, "own", "car", 1, 0),
    ("c2", 41, None, "rent", None, 0, 1),
    ("c3", 29, 31000.0, "free", "home", 1, 0),
    ("c4", 57, 88000.25, "own", "home", 0, 0),
    ("c5", 23, None, "rent", "car", 1, 1),
    ("c6", 38, 47000.0, "free", None, 0, 0),
    ("c7", 45, 61000.0, "own", "car", 1, 1),
    ("c8", 31, 39000.0, "rent", "home", 0, 0),
]
FEATURES = (
    "age",
    "income",
    "income:missing",
    "housing=own",
    "housing=rent",
    "housing=free",
    "purpose=car",
    "purpose=home",
    "purpose:missing",
    "has_phone",
)


def csv_text(rows: list[tuple[object, ...]], header: tuple[str, ...] = HEADER) -> str:
    cells = [",".join("" if v is None else str(v) for v in row) for row in rows]
    return "\n".join([",".join(header), *cells]) + "\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def parquet_table(rows: list[tuple[object, ...]]) -> pa.Table:
    columns = list(zip(*rows, strict=True))
    return pa.table(
        {
            "id": pa.array(columns[0], pa.string()),
            "age": pa.array(columns[1], pa.int64()),
            "income": pa.array(columns[2], pa.float64()),
            "housing": pa.array(columns[3], pa.string()),
            "purpose": pa.array(columns[4], pa.string()),
            "has_phone": pa.array([bool(v) for v in columns[5]], pa.bool_()),
            "default": pa.array(columns[6], pa.int8()),
        }
    )


@pytest.fixture
def schema(tmp_path: Path) -> TabularSchema:
    return load_schema(write(tmp_path / "schema.toml", SCHEMA))


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    return folder


def expected_features() -> np.ndarray:
    x = np.zeros((len(ROWS), len(FEATURES)), dtype=np.float32)
    for i, (_, age, income, housing, purpose, phone, _) in enumerate(ROWS):
        x[i, 0] = age
        x[i, 1], x[i, 2] = (0.0, 1.0) if income is None else (income, 0.0)
        x[i, 3 + ["own", "rent", "free"].index(housing)] = 1.0
        if purpose is None:
            x[i, 8] = 1.0
        else:
            x[i, 6 + ["car", "home"].index(purpose)] = 1.0
        x[i, 9] = phone
    return x


# --- the happy path ---------------------------------------------------------------------------


def test_a_csv_is_encoded_one_hot_with_indicators_in_declared_order(
    schema: TabularSchema, inputs: Path
) -> None:
    assert schema.feature_names == FEATURES
    x, y = encode_file(write(inputs / "bank.csv", csv_text(ROWS)), schema)
    np.testing.assert_array_equal(x, expected_features())
    np.testing.assert_array_equal(y, [row[-1] for row in ROWS])
    assert x.dtype == np.float32
    assert y.dtype == np.int64


def test_import_writes_a_loadable_seed_layout_and_a_record(
    schema: TabularSchema, inputs: Path, tmp_path: Path
) -> None:
    source = write(inputs / "bank.csv", csv_text(ROWS))
    out = tmp_path / "prepared"
    record = import_tabular(schema, [source], out=out, institution=4)
    (tenant,) = load_tenants(out)
    assert tenant.index == 4
    train, test = split_rows(len(ROWS), test_fraction=0.25, seed=3)
    np.testing.assert_array_equal(tenant.train_x, expected_features()[train])
    np.testing.assert_array_equal(tenant.test_x, expected_features()[test])
    np.testing.assert_array_equal(tenant.test_y, np.array([r[-1] for r in ROWS])[test])
    assert (record.train_rows, record.test_rows) == (6, 2)
    assert record.features == FEATURES
    assert record.classes == ("0", "1")
    assert record.inputs[0].rows == len(ROWS)
    assert load_import_record(out, 4) == record
    assert read_schema_digest(out, 4) == schema.digest
    assert json.loads(record.schema) == schema.canonical()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "prepared", "schema.toml"]
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o600}
    assert out.stat().st_mode & 0o777 == 0o700


def test_csv_and_parquet_give_identical_prepared_arrays(
    schema: TabularSchema, inputs: Path, tmp_path: Path
) -> None:
    csv_file = write(inputs / "bank.csv", csv_text(ROWS))
    parquet_file = inputs / "bank.parquet"
    pq.write_table(parquet_table(ROWS), parquet_file)
    import_tabular(schema, [csv_file], out=tmp_path / "from-csv", institution=0)
    import_tabular(schema, [parquet_file], out=tmp_path / "from-parquet", institution=0)
    (a,), (b,) = load_tenants(tmp_path / "from-csv"), load_tenants(tmp_path / "from-parquet")
    for name in ("train_x", "train_y", "test_x", "test_y"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_several_files_are_concatenated_in_order(
    schema: TabularSchema, inputs: Path, tmp_path: Path
) -> None:
    whole = write(inputs / "all.csv", csv_text(ROWS))
    first = write(inputs / "jan.csv", csv_text(ROWS[:3]))
    second = inputs / "feb.parquet"
    pq.write_table(parquet_table(ROWS[3:]), second)
    import_tabular(schema, [whole], out=tmp_path / "one", institution=0)
    record = import_tabular(schema, [first, second], out=tmp_path / "two", institution=0)
    assert [f.rows for f in record.inputs] == [3, 5]
    (a,), (b,) = load_tenants(tmp_path / "one"), load_tenants(tmp_path / "two")
    np.testing.assert_array_equal(a.train_x, b.train_x)
    np.testing.assert_array_equal(a.test_y, b.test_y)


def test_a_compressed_csv_reads_like_the_plain_one(schema: TabularSchema, inputs: Path) -> None:
    plain = write(inputs / "bank.csv", csv_text(ROWS))
    packed = inputs / "bank.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    for a, b in zip(encode_file(plain, schema), encode_file(packed, schema), strict=True):
        np.testing.assert_array_equal(a, b)


def test_institutions_under_one_schema_share_a_directory(
    schema: TabularSchema, inputs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "federation"
    import_tabular(schema, [write(inputs / "a.csv", csv_text(ROWS))], out=out, institution=0)
    import_tabular(schema, [write(inputs / "b.csv", csv_text(ROWS[2:]))], out=out, institution=1)
    assert [t.index for t in load_tenants(out)] == [0, 1]
    assert read_schema_digest(out, 0) == read_schema_digest(out, 1) == schema.digest


# --- bad inputs: a typed error naming file, row and column, and nothing written ---------------


def bad_rows(index: int, column: str, value: object) -> list[tuple[object, ...]]:
    rows = list(ROWS)
    row = list(rows[index])
    row[HEADER.index(column)] = value
    rows[index] = tuple(row)
    return rows


CSV_CASES = {
    "wrong type": (csv_text(bad_rows(2, "age", "thirty")), Problem.WRONG_TYPE, 3, "age"),
    "wrong binary": (csv_text(bad_rows(1, "has_phone", 2)), Problem.WRONG_TYPE, 2, "has_phone"),
    "unknown category": (
        csv_text(bad_rows(3, "housing", "castle")),
        Problem.UNKNOWN_CATEGORY,
        4,
        "housing",
    ),
    "category in another case": (
        csv_text(bad_rows(0, "housing", "Own")),
        Problem.UNKNOWN_CATEGORY,
        1,
        "housing",
    ),
    "empty cell where forbidden": (
        csv_text(bad_rows(5, "age", None)),
        Problem.MISSING_VALUE,
        6,
        "age",
    ),
    "NaN where forbidden": (csv_text(bad_rows(1, "age", "NaN")), Problem.MISSING_VALUE, 2, "age"),
    "missing category where forbidden": (
        csv_text(bad_rows(7, "housing", None)),
        Problem.MISSING_VALUE,
        8,
        "housing",
    ),
    "missing label": (csv_text(bad_rows(4, "default", None)), Problem.MISSING_VALUE, 5, "default"),
    "infinite number": (csv_text(bad_rows(2, "income", "inf")), Problem.NOT_FINITE, 3, "income"),
    "beyond float32": (csv_text(bad_rows(1, "age", "1e39")), Problem.NOT_FINITE, 2, "age"),
    "missing target column": (
        csv_text([r[:-1] for r in ROWS], HEADER[:-1]),
        Problem.MISSING_TARGET,
        None,
        "default",
    ),
    "missing declared column": (
        csv_text([r[:2] + r[3:] for r in ROWS], HEADER[:2] + HEADER[3:]),
        Problem.MISSING_COLUMN,
        None,
        "income",
    ),
    "undeclared column": (
        csv_text([(*r, "x") for r in ROWS], (*HEADER, "notes")),
        Problem.UNKNOWN_COLUMN,
        None,
        "notes",
    ),
    "duplicate column": (
        csv_text([(*r, 1) for r in ROWS], (*HEADER, "age")),
        Problem.DUPLICATE_COLUMN,
        None,
        "age",
    ),
    "short row": (
        csv_text(ROWS[:2]) + "c9,40,1000\n" + csv_text(ROWS[2:]).split("\n", 1)[1],
        Problem.MALFORMED_ROW,
        3,
        None,
    ),
    "header only": (",".join(HEADER) + "\n", Problem.EMPTY, None, None),
    "empty file": ("", Problem.EMPTY, None, None),
}


def assert_nothing_written(tmp_path: Path, out: Path) -> None:
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "schema.toml"]


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_a_bad_csv_is_refused_naming_file_row_and_column(
    case: str, schema: TabularSchema, inputs: Path, tmp_path: Path
) -> None:
    text, problem, row, column = CSV_CASES[case]
    good = write(inputs / "good.csv", csv_text(ROWS))
    bad = write(inputs / "bad.csv", text)
    out = tmp_path / "prepared"
    with pytest.raises(TabularDataError) as info:
        import_tabular(schema, [good, bad], out=out, institution=0)
    error = info.value
    assert (error.problem, error.path, error.row, error.column) == (problem, bad, row, column)
    message = str(error)
    assert message.startswith(f"{bad}: ")
    if row is not None:
        assert f"row {row}" in message
    if column is not None:
        assert f"column {column!r}" in message
    assert isinstance(error, DataFormatError)
    assert isinstance(error, ConfigError)
    assert_nothing_written(tmp_path, out)


@pytest.mark.parametrize(
    ("bad_line", "problem"),
    [("c,thirty,1.0,own,car,1,0", Problem.WRONG_TYPE), ("c,30,1.0,own", Problem.MALFORMED_ROW)],
)
def test_rows_are_counted_across_pyarrow_blocks(
    bad_line: str, problem: Problem, schema: TabularSchema, inputs: Path
) -> None:
    lines = [",".join(HEADER)] + ["c,30,1.0,own,car,1,0"] * 120_000  # several 1 MiB blocks
    lines[98_765] = bad_line  # data row 98,765 (line 0 is the header)
    path = write(inputs / "big.csv", "\n".join(lines) + "\n")
    with pytest.raises(TabularDataError) as info:
        encode_file(path, schema)
    assert (info.value.problem, info.value.row) == (problem, 98_765)


def test_the_messages_say_what_is_wrong(schema: TabularSchema, inputs: Path) -> None:
    cases = {
        "wrong type": "'thirty' is not a number",
        "unknown category": "category 'castle' is not declared (declared: own, rent, free)",
        "empty cell where forbidden": 'missing = "forbid"',
        "undeclared column": "neither declared nor in drop",
    }
    for case, expected in cases.items():
        path = write(inputs / "bad.csv", CSV_CASES[case][0])
        with pytest.raises(TabularDataError, match=re.escape(expected)):
            encode_file(path, schema)


def test_a_missing_file_is_refused(schema: TabularSchema, inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    with pytest.raises(TabularDataError, match="file not found") as info:
        import_tabular(schema, [inputs / "absent.csv"], out=out, institution=0)
    assert info.value.problem is Problem.FILE_NOT_FOUND
    assert_nothing_written(tmp_path, out)


def test_an_unknown_file_type_is_refused(schema: TabularSchema, inputs: Path) -> None:
    with pytest.raises(TabularDataError) as info:
        encode_file(write(inputs / "bank.xlsx", "x"), schema)
    assert info.value.problem is Problem.UNSUPPORTED_FORMAT


PARQUET_CASES = {
    "unknown category": (
        lambda t: t.set_column(3, "housing", pa.array(["own"] * 5 + ["moon"] + ["own"] * 2)),
        Problem.UNKNOWN_CATEGORY,
        6,
        "housing",
    ),
    "NaN where forbidden": (
        lambda t: t.set_column(1, "age", pa.array([1.0, 2.0, float("nan")] + [3.0] * 5)),
        Problem.MISSING_VALUE,
        3,
        "age",
    ),
    "binary outside 0 and 1": (
        lambda t: t.set_column(5, "has_phone", pa.array([0, 1, 1, 2, 0, 0, 1, 1])),
        Problem.WRONG_TYPE,
        4,
        "has_phone",
    ),
    "text in a numeric column": (
        lambda t: t.set_column(1, "age", pa.array(["35"] * 8)),
        Problem.WRONG_TYPE,
        None,
        "age",
    ),
}


@pytest.mark.parametrize("case", sorted(PARQUET_CASES))
def test_a_bad_parquet_file_is_refused_naming_file_row_and_column(
    case: str, schema: TabularSchema, inputs: Path, tmp_path: Path
) -> None:
    change, problem, row, column = PARQUET_CASES[case]
    bad = inputs / "bad.parquet"
    pq.write_table(change(parquet_table(ROWS)), bad)
    out = tmp_path / "prepared"
    with pytest.raises(TabularDataError) as info:
        import_tabular(schema, [bad], out=out, institution=0)
    assert (info.value.problem, info.value.row, info.value.column) == (problem, row, column)
    assert str(info.value).startswith(f"{bad}: ")
    assert_nothing_written(tmp_path, out)


def test_a_damaged_parquet_file_is_refused(schema: TabularSchema, inputs: Path) -> None:
    with pytest.raises(TabularDataError) as info:
        encode_file(write(inputs / "bank.parquet", "not parquet at all"), schema)
    assert info.value.problem is Problem.UNREADABLE


# --- the destination ---------------------------------------------------------------------------


def test_an_institution_is_never_imported_twice(
    schema: TabularSchema, inputs: Path, tmp_path: Path
) -> None:
    source = write(inputs / "bank.csv", csv_text(ROWS))
    out = tmp_path / "prepared"
    import_tabular(schema, [source], out=out, institution=0)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(DataFormatError, match="already holds institution 0"):
        import_tabular(schema, [source], out=out, institution=0)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_one_directory_holds_one_schema(
    schema: TabularSchema, inputs: Path, tmp_path: Path
) -> None:
    source = write(inputs / "bank.csv", csv_text(ROWS))
    out = tmp_path / "prepared"
    import_tabular(schema, [source], out=out, institution=0)
    other = load_schema(write(tmp_path / "other.toml", SCHEMA.replace('"free"]', '"social"]')))
    with pytest.raises(DataFormatError, match="schema digest"):
        import_tabular(other, [source], out=out, institution=1)
    assert sorted(p.name for p in out.iterdir() if p.name.endswith("_1.npy")) == []


def test_seed_layout_files_without_a_record_are_refused(
    schema: TabularSchema, inputs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "prepared"
    out.mkdir()
    np.save(out / "client_train_samples_3.npy", np.zeros((2, 10), np.float32))
    with pytest.raises(DataFormatError, match="not imported with a schema"):
        import_tabular(schema, [write(inputs / "bank.csv", csv_text(ROWS))], out=out, institution=0)


# --- the schema and its digest -------------------------------------------------------------------


def test_the_digest_ignores_layout_comments_key_order_drop_and_split(
    schema: TabularSchema,
) -> None:
    restyled = parse_schema(tomllib.loads(SCHEMA_RESTYLED))
    assert restyled.digest == schema.digest
    assert restyled.split != schema.split
    assert len(schema.digest) == 64


@pytest.mark.parametrize(
    "change",
    [
        ('"free"]', '"free", "social"]'),  # another category
        ('["own", "rent", "free"]', '["rent", "own", "free"]'),  # another one-hot order
        (
            'name = "income"\ntype = "numeric"\nmissing = "indicator"',
            'name = "income"\ntype = "numeric"',
        ),
        ('name = "has_phone"\ntype = "binary"', 'name = "has_phone"\ntype = "numeric"'),
        ('target = "default"', 'target = "has_phone"'),
    ],
)
def test_the_digest_changes_with_what_the_arrays_mean(
    change: tuple[str, str], schema: TabularSchema
) -> None:
    assert change[0] in SCHEMA
    changed = parse_schema(tomllib.loads(SCHEMA.replace(*change)))
    assert changed.digest != schema.digest


def test_reordering_columns_changes_the_digest() -> None:
    a = TabularSchema(
        columns=(
            Column("x", ColumnType.NUMERIC),
            Column("z", ColumnType.NUMERIC),
            Column("y", ColumnType.BINARY),
        ),
        target="y",
    )
    b = TabularSchema(columns=(a.columns[1], a.columns[0], a.columns[2]), target="y")
    assert a.digest != b.digest


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (SCHEMA.replace('type = "numeric"', 'typ = "numeric"', 1), "unknown key 'typ'"),
        (SCHEMA.replace("[split]", "[split]\nshuffle = true"), "unknown key 'shuffle'"),
        (SCHEMA.replace('target = "default"', 'target = "age"'), "must be binary or categorical"),
        (SCHEMA.replace('target = "default"', 'target = "score"'), "'score' is not a declared"),
        (SCHEMA.replace('"own", "rent"', '"own", "NA"'), "would be read as a missing value"),
        (SCHEMA.replace('"own", "rent"', '"own", "own"'), "duplicate"),
        (SCHEMA.replace('type = "binary"', 'type = "boolean"', 1), "'boolean' is not one of"),
        (SCHEMA.replace('missing = "indicator"', 'missing = "impute-mean"', 1), "is not one of"),
        (SCHEMA.replace('drop = ["id"]', 'drop = ["age"]'), "both declared and in drop"),
        (SCHEMA.replace("test_fraction = 0.25", "test_fraction = 1.0"), "test_fraction"),
        (SCHEMA + '[[column]]\nname = "age"\ntype = "numeric"\n', "declared twice"),
        ("target = 'y'\n", "needs [[column]]"),
        ("version = 2\n" + SCHEMA, "version must be 1"),
        ("not = toml = at all", "not valid TOML"),
    ],
)
def test_a_bad_schema_is_refused_naming_the_file_and_key(
    text: str, message: str, tmp_path: Path
) -> None:
    path = write(tmp_path / "schema.toml", text)
    with pytest.raises(SchemaError, match=re.escape(message)) as info:
        load_schema(path)
    assert str(info.value).startswith(str(path))


def test_a_missing_schema_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="schema file not found"):
        load_schema(tmp_path / "absent.toml")


def test_a_categorical_target_labels_by_declared_position(inputs: Path) -> None:
    schema = TabularSchema(
        columns=(
            Column("amount", ColumnType.NUMERIC),
            Column("risk", ColumnType.CATEGORICAL, categories=("low", "mid", "high")),
        ),
        target="risk",
    )
    text = "amount,risk\n1,high\n2,low\n3,mid\n"
    x, y = encode_file(write(inputs / "r.csv", text), schema)
    np.testing.assert_array_equal(y, [2, 0, 1])
    assert schema.classes == ("low", "mid", "high")
    assert x.shape == (3, 1)


def test_missing_is_an_enum_with_no_imputation() -> None:
    assert {m.value for m in Missing} == {"forbid", "indicator"}


# --- records to score (securefed predict) ------------------------------------------------------


def test_records_to_score_are_encoded_like_an_import_without_needing_the_target(
    schema: TabularSchema, inputs: Path
) -> None:
    with_target = write(inputs / "bank.csv", csv_text(ROWS))
    records = encode_records(with_target, schema, keep=["id"])
    np.testing.assert_array_equal(records.features, encode_file(with_target, schema)[0])
    assert records.kept.column("id").to_pylist() == [row[0] for row in ROWS]
    # new records: no target column, or a blank one (never read); ids kept as exact text
    ids = ["007", "NA", "", "c4"]
    unlabelled = [(ids[i], *ROWS[i][1:-1]) for i in range(4)]
    no_target = encode_records(write(inputs / "new.csv", csv_text(unlabelled, HEADER[:-1])), schema)
    np.testing.assert_array_equal(no_target.features, expected_features()[:4])
    assert no_target.rows == 4
    blank = write(inputs / "blank.csv", csv_text([(*row, None) for row in unlabelled]))
    assert encode_records(blank, schema, keep=["id"]).kept.column("id").to_pylist() == ids
    parquet = inputs / "new.parquet"
    pq.write_table(parquet_table(ROWS).drop_columns(["default"]), parquet)
    from_parquet = encode_records(parquet, schema, keep=["id"])
    np.testing.assert_array_equal(from_parquet.features, expected_features())
    assert from_parquet.kept.column("id").to_pylist() == [row[0] for row in ROWS]


def test_records_to_score_get_the_imports_errors(schema: TabularSchema, inputs: Path) -> None:
    good = write(inputs / "bank.csv", csv_text(ROWS))
    with pytest.raises(ConfigError, match="'age' is not in the schema's drop list"):
        encode_records(good, schema, keep=["age"])
    without_id = write(inputs / "no_id.csv", csv_text([r[1:] for r in ROWS], HEADER[1:]))
    with pytest.raises(TabularDataError, match="column 'id': an id column to keep") as missing:
        encode_records(without_id, schema, keep=["id"])
    assert missing.value.problem is Problem.MISSING_COLUMN
    bad = list(ROWS)
    bad[4] = ("c5", 23, None, "castle", "car", 1, 1)
    with pytest.raises(TabularDataError, match=r"row 5, column 'housing': category 'castle'"):
        encode_records(write(inputs / "bad.csv", csv_text(bad)), schema)


# --- the optional dependency ----------------------------------------------


def test_without_pyarrow_the_package_imports_and_the_import_says_how_to_install() -> None:
    code = (
        "import sys; sys.modules['pyarrow'] = None\n"
        "import securefed.data, securefed.data.tabular, securefed.bench.tabular\n"
        "from securefed.data.schema import *\n"
        "from securefed.data.tabular import encode_file\n"
        "from securefed.errors import ConfigError\n"
        "try:\n"
        "    encode_file('x.csv', None)\n"
        "except ConfigError as e:\n"
        "    print(e)\n"
    )
    result = subprocess.run(  # noqa: S603 -- fixed argv: this interpreter and a literal
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "pip install 'securefed[tabular]'" in result.stdout
