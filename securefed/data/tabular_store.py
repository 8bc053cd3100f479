"""Where an imported table goes: the seed layout plus one import record, written all or nothing.

An import of institution ``i`` into ``DIR`` writes, with ``allow_pickle=False``::

    DIR/client_train_samples_<i>.npy   float32 (n_train, F)   F = len(features)
    DIR/client_train_labels_<i>.npy    int64   (n_train,)
    DIR/client_test_samples_<i>.npy    float32 (n_test, F)
    DIR/client_test_labels_<i>.npy     int64   (n_test,)
    DIR/tabular_<i>.json               the import record (:class:`ImportRecord`)

so ``DIR`` loads with :func:`~securefed.data.load_tenants` like any seed-layout directory, and
several institutions may be imported into one ``DIR`` (a simulation) as long as they share the
schema digest. The record holds the schema digest and its canonical form, the feature names, the
classes, the split, and each input file's path, row count, size and SHA-256;
:func:`read_schema_digest` reads the digest back.

**All or nothing.** :func:`write_import` checks ``DIR`` first (no files of institution ``i``
yet; no record with another digest; no seed-layout files without a record), then writes all five
files into a private temporary directory next to ``DIR`` (``.<DIR name>.import-<i>-*``), each
fsynced. A ``DIR`` that does not exist is then created by renaming that directory (atomic: a
reader sees no ``DIR`` or the complete one, mode 0700). Into an existing ``DIR`` the five files
are hard-linked one by one, each refusing to replace an existing file, the record last; if any
link fails the ones already made are removed again. The temporary directory is always removed.
Only a crash (power cut, ``kill -9``) in the middle of those links can leave part of an
institution in an existing ``DIR``; :func:`~securefed.data.load_tenants` then refuses it, naming
the missing file, and its record is absent. New files are readable by their owner only (0600):
they are customer records.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from securefed.data.layout import DataFormatError, Part, TenantData, discover_indices, tenant_file
from securefed.errors import ConfigError
from securefed.files import PRIVATE_FILE_MODE, fsync_directory

__all__ = [
    "RECORD_FORMAT",
    "ImportRecord",
    "InputFile",
    "SchemaMismatch",
    "check_destination",
    "check_schemas",
    "load_import_record",
    "read_schema_digest",
    "record_file",
    "write_import",
]

RECORD_FORMAT = "securefed/tabular-import"
_RECORD_VERSION = 1
_RECORD_PATTERN = re.compile(r"^tabular_(0|[1-9][0-9]*)\.json$")


def record_file(directory: Path, institution: int) -> Path:
    """The path of institution ``institution``'s import record in ``directory``."""
    return directory / f"tabular_{institution}.json"


@dataclass(frozen=True, slots=True)
class InputFile:
    """One input file as it was read: its path as given, data rows, bytes and SHA-256."""

    path: str
    rows: int
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class ImportRecord:
    """The contents of ``tabular_<i>.json`` (see the module docstring).

    ``schema`` is the schema's canonical JSON text (:meth:`TabularSchema.canonical_json`), whose
    SHA-256 is ``schema_sha256``; label ``k`` means ``classes[k]``; sample column ``j`` is
    ``features[j]``.
    """

    institution: int
    schema_sha256: str
    schema: str
    features: tuple[str, ...]
    classes: tuple[str, ...]
    test_fraction: float
    split_seed: int
    inputs: tuple[InputFile, ...]
    train_rows: int
    test_rows: int

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to ``tabular_<i>.json``."""
        return {
            "format": RECORD_FORMAT,
            "version": _RECORD_VERSION,
            "institution": self.institution,
            "schema_sha256": self.schema_sha256,
            "schema": json.loads(self.schema),
            "features": list(self.features),
            "classes": list(self.classes),
            "split": {"test_fraction": self.test_fraction, "seed": self.split_seed},
            "inputs": [
                {"path": f.path, "rows": f.rows, "bytes": f.size, "sha256": f.sha256}
                for f in self.inputs
            ],
            "sizes": {"train": self.train_rows, "test": self.test_rows},
        }

    @classmethod
    def from_json(cls, document: object, *, where: str) -> ImportRecord:
        """Parse a record; ``where`` (the file) starts every message.

        Raises:
            DataFormatError: not a securefed import record of a supported version, or a field
                is missing or has the wrong type.
        """
        if not isinstance(document, Mapping) or document.get("format") != RECORD_FORMAT:
            raise DataFormatError(f"{where}: not a securefed import record")
        if document.get("version") != _RECORD_VERSION:
            raise DataFormatError(f"{where}: unsupported version {document.get('version')!r}")
        try:
            split, sizes = document["split"], document["sizes"]
            return cls(
                institution=int(document["institution"]),
                schema_sha256=str(document["schema_sha256"]),
                schema=json.dumps(
                    document["schema"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
                ),
                features=tuple(str(f) for f in document["features"]),
                classes=tuple(str(c) for c in document["classes"]),
                test_fraction=float(split["test_fraction"]),
                split_seed=int(split["seed"]),
                inputs=tuple(
                    InputFile(str(f["path"]), int(f["rows"]), int(f["bytes"]), str(f["sha256"]))
                    for f in document["inputs"]
                ),
                train_rows=int(sizes["train"]),
                test_rows=int(sizes["test"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataFormatError(f"{where}: malformed import record ({exc!r})") from None


def load_import_record(directory: str | os.PathLike[str], institution: int) -> ImportRecord:
    """Institution ``institution``'s import record in ``directory``.

    Raises:
        DataFormatError: the record is missing, unreadable, not JSON, malformed, or names
            another institution.
    """
    path = record_file(Path(directory), institution)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFormatError(f"{path}: no import record (was the table imported?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataFormatError(f"{path}: unreadable import record ({exc})") from None
    record = ImportRecord.from_json(document, where=str(path))
    if record.institution != institution:
        raise DataFormatError(f"{path}: records institution {record.institution}")
    return record


def read_schema_digest(directory: str | os.PathLike[str], institution: int) -> str:
    """The hex schema digest that institution ``institution`` was imported under.

    Parties compare these before training: equal digests mean equal feature columns, types,
    category lists, missing treatment and target.

    Raises:
        DataFormatError: as :func:`load_import_record`.
    """
    return load_import_record(directory, institution).schema_sha256


class SchemaMismatch(DataFormatError):
    """Institutions' tables were imported under different schemas (or a table under another
    schema than the run configuration pins): their feature columns do not line up."""


def check_schemas(
    directory: str | os.PathLike[str], institutions: Sequence[int], *, pinned: str | None
) -> dict[int, str]:
    """The schema digest of each institution in ``institutions`` whose table was imported into
    ``directory`` (``securefed data import``), after checking that they line up.

    With ``pinned`` (the run configuration's ``data.schema_sha256``) every institution must have
    an import record with exactly that digest. Without it, the institutions that have records
    must agree, and either all or none of them have one (a mix of imported tables and other
    data cannot share a model).

    Raises:
        SchemaMismatch: a digest differs (the message names the institutions and digests), or
            an institution has no import record when one is required.
        DataFormatError: an import record is unreadable.
    """
    folder = Path(directory)
    digests = {
        i: read_schema_digest(folder, i) for i in institutions if record_file(folder, i).is_file()
    }
    if pinned is not None:
        missing = [i for i in institutions if i not in digests]
        if missing:
            raise SchemaMismatch(
                f"data.schema_sha256 is pinned, but institutions {missing} in {folder} have no "
                "import record (tabular_<i>.json from `securefed data import`)"
            )
        wrong = {i: d for i, d in digests.items() if d != pinned}
        if wrong:
            listed = ", ".join(f"{i}: {d[:16]}..." for i, d in sorted(wrong.items()))
            raise SchemaMismatch(
                f"institutions' tables were imported under another schema than the pinned "
                f"data.schema_sha256 {pinned[:16]}... ({listed}): re-import them with the "
                "federation's schema"
            )
        return digests
    if digests and len(digests) != len(institutions):
        missing = sorted(set(institutions) - set(digests))
        raise SchemaMismatch(
            f"institutions {missing} in {folder} have no import record while the others do: "
            "imported tables and other data cannot train one model"
        )
    if len(set(digests.values())) > 1:
        groups: dict[str, list[int]] = {}
        for i, d in sorted(digests.items()):
            groups.setdefault(d, []).append(i)
        listed = "; ".join(f"{d[:16]}...: {v}" for d, v in groups.items())
        raise SchemaMismatch(
            f"institutions' tables were imported under different schemas ({listed}): their "
            "feature columns do not line up; import every table with one schema and pin its "
            "digest as data.schema_sha256"
        )
    return digests


def check_destination(out: str | os.PathLike[str], *, institution: int, digest: str) -> None:
    """Whether institution ``institution`` may be imported under schema ``digest`` into ``out``.

    Raises:
        DataFormatError: ``out`` exists and is not a directory; it already holds files or a
            record of ``institution``; it holds seed-layout files without an import record; or
            a record in it has another schema digest.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataFormatError(f"{out}: exists and is not a directory")
    if not out.is_dir():
        return
    present = discover_indices(out)
    records = {int(m[1]) for e in out.iterdir() if (m := _RECORD_PATTERN.match(e.name))}
    if institution in present or institution in records:
        raise DataFormatError(
            f"{out}: already holds institution {institution}'s data "
            f"({tenant_file(out, Part.TRAIN_SAMPLES, institution).name} or "
            f"{record_file(out, institution).name}); remove its files to import again, or "
            "choose another directory"
        )
    stray = sorted(set(present) - records)
    if stray:
        raise DataFormatError(
            f"{out}: holds seed-layout files of tenant {stray[0]} that were not imported with a "
            f"schema ({record_file(out, stray[0]).name} is missing); choose another directory"
        )
    for index in sorted(records):
        other = load_import_record(out, index)
        if other.schema_sha256 != digest:
            raise DataFormatError(
                f"{out}: institution {index} was imported under schema digest "
                f"{other.schema_sha256[:16]}..., this schema's is "
                f"{digest[:16]}...; one directory holds one schema"
            )


def _save(path: Path, data: bytes | np.ndarray[Any, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        if isinstance(data, bytes):
            handle.write(data)
        else:
            np.save(handle, data, allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())


def _stage(staging: Path, tenant: TenantData, record: ImportRecord) -> list[str]:
    """Write the five files into ``staging``; their names in publishing order (record last)."""
    arrays: dict[Part, npt.NDArray[np.generic]] = {
        Part.TRAIN_SAMPLES: tenant.train_x,
        Part.TRAIN_LABELS: tenant.train_y,
        Part.TEST_SAMPLES: tenant.test_x,
        Part.TEST_LABELS: tenant.test_y,
    }
    names: list[str] = []
    for part, array in arrays.items():
        path = tenant_file(staging, part, tenant.index)
        _save(path, array)
        names.append(path.name)
    text = json.dumps(record.to_json(), indent=2, ensure_ascii=False) + "\n"
    path = record_file(staging, tenant.index)
    _save(path, text.encode("utf-8"))
    names.append(path.name)
    fsync_directory(staging)
    return names


def _link_into(staging: Path, out: Path, names: list[str]) -> None:
    """Hard-link each staged file into ``out`` (never replacing one); undo all on failure."""
    linked: list[Path] = []
    try:
        for name in names:
            os.link(staging / name, out / name)
            linked.append(out / name)
    except OSError as exc:
        for path in linked:
            path.unlink(missing_ok=True)
        reason = "it already exists" if isinstance(exc, FileExistsError) else exc.strerror
        raise ConfigError(f"cannot write {out / name}: {reason}; nothing was imported") from None
    fsync_directory(out)


@contextmanager
def _staging_directory(out: Path, institution: int) -> Iterator[Path]:
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(dir=parent, prefix=f".{out.name}.import-{institution}-")
        )  # mode 0700
    except OSError as exc:
        raise ConfigError(f"cannot write next to {out}: {exc.strerror}") from None
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_import(out: str | os.PathLike[str], tenant: TenantData, record: ImportRecord) -> Path:
    """Write ``tenant``'s four arrays and ``record`` into ``out``, all or nothing.

    See the module docstring for the procedure and its one crash window. Returns ``out``.

    Raises:
        DataFormatError: ``out`` is not a directory, already holds this institution, holds
            another schema's import or seed-layout files without a record. Nothing is written.
        ConfigError: the files cannot be written (the operating system's reason); whatever was
            written is removed again.
    """
    target = Path(out)
    if record.institution != tenant.index:
        raise ConfigError(f"record of institution {record.institution} for tenant {tenant.index}")
    check_destination(target, institution=record.institution, digest=record.schema_sha256)
    with _staging_directory(target, tenant.index) as staging:
        try:
            names = _stage(staging, tenant, record)
        except OSError as exc:
            raise ConfigError(f"cannot write next to {target}: {exc.strerror}") from None
        if target.exists():
            _link_into(staging, target, names)
            return target
        try:
            staging.rename(target)  # atomic; fails if target appeared and is not empty
        except OSError as exc:
            raise ConfigError(f"cannot create {target}: {exc.strerror}") from None
    fsync_directory(target.parent)
    return target
