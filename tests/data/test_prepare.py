"""prepare(): source -> partition -> seed layout + federation.json, deterministic and safe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from securefed.data import (
    METADATA_FILE,
    DataFormatError,
    PartitionConfig,
    Scheme,
    bundled_digits_path,
    load_federation_metadata,
    load_tenants,
    num_classes,
    prepare,
)
from securefed.data.source import file_sha256
from securefed.errors import ConfigError

CONFIG = PartitionConfig(
    tenants=6, groups=3, scheme=Scheme.CONCEPT_SHIFT, seed=4, samples_per_tenant=40
)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    prepare("bundled", out=out, config=CONFIG)
    return out


def test_prepare_bundled_writes_a_loadable_federation(tmp_path: Path) -> None:
    fed = prepare("bundled", out=tmp_path / "fed", config=CONFIG)
    tenants = load_tenants(tmp_path / "fed")  # federation.json is ignored
    assert [t.index for t in tenants] == list(range(6))
    assert num_classes(tenants) == 10
    for a, b in zip(fed.tenants, tenants, strict=True):
        assert b.train_x.shape == (32, 1, 28, 28)
        np.testing.assert_array_equal(a.train_x, b.train_x)
        np.testing.assert_array_equal(a.test_y, b.test_y)
    meta = load_federation_metadata(tmp_path / "fed")
    assert meta is not None
    assert meta.scheme is Scheme.CONCEPT_SHIFT
    assert meta.seed == 4
    assert meta.tenants == 6
    assert dict(meta.group_of_tenant) == {0: 0, 1: 0, 2: 1, 3: 1, 4: 2, 5: 2}
    assert meta.permutations == fed.permutations
    assert meta.test_fraction == 0.2
    assert meta.num_classes == 10
    assert meta.source_kind == "bundled"
    assert meta.source_name == "bundled"
    assert meta.source_sha256 == file_sha256(bundled_digits_path())
    assert dict(meta.sizes) == dict.fromkeys(range(6), (32, 8))
    assert meta.config == CONFIG
    document = json.loads((tmp_path / "fed" / METADATA_FILE).read_text())
    assert document["group_of_tenant"]["5"] == 2
    assert document["scheme"] == "concept-shift"


def test_prepare_is_deterministic(tmp_path: Path) -> None:
    config = PartitionConfig(tenants=4, groups=2, scheme=Scheme.DOMINANT_CLASS, seed=9)
    prepare("mnist5k", out=tmp_path / "a", config=config)
    prepare("mnist5k", out=tmp_path / "b", config=config)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert len(names) == 4 * 4 + 1
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    meta = load_federation_metadata(tmp_path / "a")
    assert meta is not None
    assert len(meta.dominant_classes) == 2


def test_prepare_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    out = tmp_path / "fed"
    prepare("bundled", out=out, config=CONFIG)
    with pytest.raises(DataFormatError, match=r"federation\.json: already exists"):
        prepare("bundled", out=out, config=CONFIG)
    (out / METADATA_FILE).unlink()
    with pytest.raises(DataFormatError, match="already exists"):
        prepare("bundled", out=out, config=CONFIG)
    other = PartitionConfig(tenants=6, groups=2, scheme=Scheme.IID, seed=1, samples_per_tenant=30)
    prepare("bundled", out=out, config=other, overwrite=True)
    meta = load_federation_metadata(out)
    assert meta is not None
    assert meta.scheme is Scheme.IID


def test_prepare_repartitions_a_seed_layout_directory(tmp_path: Path) -> None:
    prepare("bundled", out=tmp_path / "src", config=CONFIG)
    config = PartitionConfig(tenants=3, groups=3, scheme=Scheme.PATHOLOGICAL, seed=0)
    fed = prepare(tmp_path / "src", out=tmp_path / "again", config=config)
    assert sum(len(t.train_y) + len(t.test_y) for t in fed.tenants) <= 240
    meta = load_federation_metadata(tmp_path / "again")
    assert meta is not None
    assert meta.source_kind == "directory"
    with pytest.raises(ConfigError, match="cannot be the source"):
        prepare(tmp_path / "src", out=tmp_path / "src", config=config, overwrite=True)


def test_prepare_errors_leave_nothing_behind(tmp_path: Path) -> None:
    too_many = PartitionConfig(tenants=10, groups=1, scheme=Scheme.IID, samples_per_tenant=600)
    with pytest.raises(ConfigError, match="exceeds"):
        prepare("bundled", out=tmp_path / "fed", config=too_many)
    assert not (tmp_path / "fed").exists()


def test_metadata_absent_or_malformed(tmp_path: Path) -> None:
    assert load_federation_metadata(tmp_path) is None
    path = tmp_path / METADATA_FILE
    path.write_text("{not json")
    with pytest.raises(DataFormatError, match=r"federation\.json: not valid JSON"):
        load_federation_metadata(tmp_path)
    path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataFormatError, match="not a securefed federation file"):
        load_federation_metadata(tmp_path)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seed", "1"),
        ("scheme", "sorted"),
        ("tenants", 0),
        ("permutations", [[0, 0]]),
        ("group_of_tenant", {"0": 7}),
        ("sizes", {"0": {"train": 1}}),
        ("version", 2),
    ],
)
def test_metadata_fields_are_validated(
    tmp_path: Path, prepared: Path, field: str, value: object
) -> None:
    document = json.loads((prepared / METADATA_FILE).read_text())
    path = tmp_path / METADATA_FILE
    document[field] = value
    path.write_text(json.dumps(document))
    with pytest.raises(DataFormatError, match=r"federation\.json"):
        load_federation_metadata(tmp_path)
