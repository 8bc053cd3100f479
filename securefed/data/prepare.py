"""Prepare a simulated federation on disk: load a source, partition it, write the seed layout.

``securefed data prepare --source bundled --tenants 9 --groups 3 --scheme concept-shift
--seed 1 --out data/fed`` calls :func:`prepare`. Besides the four ``.npy`` files per tenant it
writes ``federation.json`` (:data:`METADATA_FILE`), which :func:`~securefed.data.load_tenants`
ignores and :func:`load_federation_metadata` reads back::

    {
      "format": "securefed/federation", "version": 1,
      "scheme": "concept-shift", "seed": 1, "tenants": 9, "groups": 3,
      "group_of_tenant": {"0": 0, "1": 0, ..., "8": 2},
      "permutations": [[0, 1, ...], [3, 7, ...], [5, 0, ...]],
      "dominant_classes": [],
      "num_classes": 10, "test_fraction": 0.2, "dominant_share": 0.8,
      "samples_per_tenant": null, "classes_per_tenant": 2,
      "source": {"kind": "bundled", "name": "bundled", "sha256": "<hex>"},
      "sizes": {"0": {"train": 446, "test": 111}, ...}
    }

``group_of_tenant`` is each tenant's latent group -- the "declared portfolio segment" a
deployment would state; ``permutations[g][old]`` is group g's label for class ``old``;
``dominant_classes[g]`` lists group g's dominant classes (dominant-class scheme only, else ``[]``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from securefed.data.layout import DataFormatError, write_tenants
from securefed.data.partition import Federation, PartitionConfig, Scheme, partition
from securefed.data.source import Source, SourceData, load_source
from securefed.errors import ConfigError
from securefed.files import write_atomic

__all__ = [
    "METADATA_FILE",
    "METADATA_FORMAT",
    "FederationMetadata",
    "load_federation_metadata",
    "prepare",
]

METADATA_FILE = "federation.json"
METADATA_FORMAT = "securefed/federation"
_VERSION = 1


@dataclass(frozen=True)
class FederationMetadata:
    """The contents of ``federation.json`` (see the module docstring), validated.

    ``group_of_tenant`` maps tenant index -> latent group (read-only mapping); ``sizes`` maps
    tenant index -> ``(train, test)`` sample counts.
    """

    scheme: Scheme
    seed: int
    tenants: int
    groups: int
    group_of_tenant: Mapping[int, int]
    permutations: tuple[tuple[int, ...], ...]
    dominant_classes: tuple[tuple[int, ...], ...]
    num_classes: int
    test_fraction: float
    dominant_share: float
    samples_per_tenant: int | None
    classes_per_tenant: int
    source_kind: str
    source_name: str
    source_sha256: str
    sizes: Mapping[int, tuple[int, int]]

    @property
    def config(self) -> PartitionConfig:
        """The :class:`PartitionConfig` that produced the federation."""
        return PartitionConfig(
            tenants=self.tenants,
            groups=self.groups,
            scheme=self.scheme,
            seed=self.seed,
            test_fraction=self.test_fraction,
            dominant_share=self.dominant_share,
            samples_per_tenant=self.samples_per_tenant,
            classes_per_tenant=self.classes_per_tenant,
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to ``federation.json``."""
        return {
            "format": METADATA_FORMAT,
            "version": _VERSION,
            "scheme": self.scheme.value,
            "seed": self.seed,
            "tenants": self.tenants,
            "groups": self.groups,
            "group_of_tenant": {str(i): g for i, g in sorted(self.group_of_tenant.items())},
            "permutations": [list(p) for p in self.permutations],
            "dominant_classes": [list(d) for d in self.dominant_classes],
            "num_classes": self.num_classes,
            "test_fraction": self.test_fraction,
            "dominant_share": self.dominant_share,
            "samples_per_tenant": self.samples_per_tenant,
            "classes_per_tenant": self.classes_per_tenant,
            "source": {
                "kind": self.source_kind,
                "name": self.source_name,
                "sha256": self.source_sha256,
            },
            "sizes": {
                str(i): {"train": tr, "test": te} for i, (tr, te) in sorted(self.sizes.items())
            },
        }

    @classmethod
    def from_federation(cls, federation: Federation, source: SourceData) -> FederationMetadata:
        """The metadata of a federation partitioned from ``source``."""
        c = federation.config
        return cls(
            scheme=c.scheme,
            seed=c.seed,
            tenants=c.tenants,
            groups=c.groups,
            group_of_tenant=MappingProxyType(
                {t.index: g for t, g in zip(federation.tenants, federation.groups, strict=True)}
            ),
            permutations=federation.permutations,
            dominant_classes=federation.dominant_classes,
            num_classes=federation.num_classes,
            test_fraction=float(c.test_fraction),
            dominant_share=float(c.dominant_share),
            samples_per_tenant=c.samples_per_tenant,
            classes_per_tenant=c.classes_per_tenant,
            source_kind=source.kind.value,
            source_name=source.name,
            source_sha256=source.sha256,
            sizes=MappingProxyType(
                {t.index: (len(t.train_y), len(t.test_y)) for t in federation.tenants}
            ),
        )


def _int(value: object, what: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataFormatError(f"{path}: {what} must be an integer, got {value!r}")
    return value


def _number(value: object, what: str, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataFormatError(f"{path}: {what} must be a number, got {value!r}")
    return float(value)


def _parse(document: object, path: Path) -> FederationMetadata:
    if not isinstance(document, dict) or document.get("format") != METADATA_FORMAT:
        raise DataFormatError(
            f"{path}: not a securefed federation file (format != {METADATA_FORMAT!r})"
        )
    if document.get("version") != _VERSION:
        raise DataFormatError(f"{path}: unsupported version {document.get('version')!r}")
    try:
        groups_raw = document["group_of_tenant"]
        sizes_raw = document["sizes"]
        source = document["source"]
        perms_raw = document["permutations"]
        dominant_raw = document["dominant_classes"]
        if not (
            isinstance(groups_raw, dict)
            and isinstance(sizes_raw, dict)
            and isinstance(source, dict)
            and isinstance(perms_raw, list)
            and isinstance(dominant_raw, list)
        ):
            raise DataFormatError(
                f"{path}: malformed group_of_tenant, sizes, source, permutations or "
                "dominant_classes"
            )
        group_of = {int(k): _int(v, f"group of tenant {k}", path) for k, v in groups_raw.items()}
        sizes = {
            int(k): (_int(v["train"], "train size", path), _int(v["test"], "test size", path))
            for k, v in sizes_raw.items()
        }
        permutations = tuple(
            tuple(_int(v, "permutation entry", path) for v in p) for p in perms_raw
        )
        dominant = tuple(tuple(_int(v, "dominant class", path) for v in d) for d in dominant_raw)
        per_tenant = document["samples_per_tenant"]
        metadata = FederationMetadata(
            scheme=Scheme(document["scheme"]),
            seed=_int(document["seed"], "seed", path),
            tenants=_int(document["tenants"], "tenants", path),
            groups=_int(document["groups"], "groups", path),
            group_of_tenant=MappingProxyType(group_of),
            permutations=permutations,
            dominant_classes=dominant,
            num_classes=_int(document["num_classes"], "num_classes", path),
            test_fraction=_number(document["test_fraction"], "test_fraction", path),
            dominant_share=_number(document["dominant_share"], "dominant_share", path),
            samples_per_tenant=None
            if per_tenant is None
            else _int(per_tenant, "samples_per_tenant", path),
            classes_per_tenant=_int(document["classes_per_tenant"], "classes_per_tenant", path),
            source_kind=str(source["kind"]),
            source_name=str(source["name"]),
            source_sha256=str(source["sha256"]),
            sizes=MappingProxyType(sizes),
        )
        metadata.config  # noqa: B018 -- validates the partition parameters
    except DataFormatError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataFormatError(f"{path}: malformed federation file ({exc})") from None
    identity = sorted(range(metadata.num_classes))
    if len(metadata.permutations) != metadata.groups or any(
        sorted(p) != identity for p in metadata.permutations
    ):
        raise DataFormatError(
            f"{path}: permutations must be one permutation of 0..num_classes-1 per group"
        )
    if set(metadata.group_of_tenant.values()) - set(range(metadata.groups)):
        raise DataFormatError(f"{path}: group_of_tenant names a group outside 0..groups-1")
    return metadata


def load_federation_metadata(directory: str | os.PathLike[str]) -> FederationMetadata | None:
    """Read ``<directory>/federation.json``; None when the directory has none.

    Raises:
        DataFormatError: the file exists but is not valid JSON or not a securefed federation
            file of a supported version, or a field is missing or has the wrong type.
    """
    path = Path(directory) / METADATA_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: unreadable ({exc})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}: not valid JSON ({exc})") from None
    return _parse(document, path)


def _write_json_atomic(path: Path, document: dict[str, Any]) -> None:
    write_atomic(path, (json.dumps(document, indent=2) + "\n").encode("utf-8"))


def prepare(
    source: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str],
    config: PartitionConfig,
    overwrite: bool = False,
) -> Federation:
    """Load ``source``, partition it with ``config``, write the seed layout and ``federation.json``.

    ``source`` is anything :func:`~securefed.data.load_source` accepts. The directory ``out`` is
    created if needed. Deterministic: the same source and config write the same files.

    Raises:
        ConfigError: an unknown source or a request the data cannot meet (see
            :func:`~securefed.data.partition`); ``out`` is the source directory itself.
        DataFormatError: a malformed source; ``out`` already holds tenant files or
            ``federation.json`` and ``overwrite`` is False, or holds other tenants' files. These
            checks run before anything is written.
    """
    target = Path(out)
    loaded = load_source(source)
    if (
        loaded.kind is Source.DIRECTORY
        and target.exists()
        and target.resolve() == Path(source).resolve()
    ):
        raise ConfigError(f"{target}: the output directory cannot be the source directory")
    federation = partition(loaded.x, loaded.y, config)
    metadata_path = target / METADATA_FILE
    if metadata_path.exists() and not overwrite:
        raise DataFormatError(
            f"{metadata_path}: already exists (pass overwrite=True to replace it)"
        )
    write_tenants(target, federation.tenants, overwrite=overwrite)
    metadata = FederationMetadata.from_federation(federation, loaded)
    _write_json_atomic(metadata_path, metadata.to_json())
    return federation
