"""Where a run's institutions come from: a seed-layout directory, or a source partitioned into
one, so that the run always reads the seed layout.

A source is prepared ONCE into the data home (``$SECUREFED_HOME/prepared/<key>``, default
``~/.local/share/securefed``; the key is a digest of the source and the partition), so that
every run on it trains the same records and finds their spend record (docs/dp.md, "The budget
follows the records"). Only demonstrations, experiments and benchmarks on public data ask for
their own copy in the run directory (``copy=True``): that copy's budget starts at zero.

The declared segments of group mode come from ``federation.json`` (written by ``securefed data
prepare``) or from the configuration's list; a directory without either cannot run declared
group mode, and says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from securefed.data import (
    PartitionConfig,
    TenantData,
    load_federation_metadata,
    load_source,
    load_tenants,
    num_classes,
    partition,
    prepare,
)
from securefed.errors import ConfigError
from securefed.runtime.config import DataConfig

__all__ = [
    "DATA_DIR",
    "HOME_VARIABLE",
    "Tenants",
    "data_home",
    "load_run_tenants",
    "peek_run_tenants",
]

#: Sub-directory of the run directory that holds the prepared seed layout.
DATA_DIR = "data"
#: The environment variable that names the data home.
HOME_VARIABLE = "SECUREFED_HOME"


@dataclass(frozen=True)
class Tenants:
    """The institutions of a run, sorted by tenant index, with what the layout says about them.

    ``segments`` is each tenant's declared segment (latent group) from ``federation.json``, or
    None if the directory has none; ``directory`` is the seed-layout directory read.
    """

    tenants: tuple[TenantData, ...]
    num_classes: int
    segments: tuple[int, ...] | None
    directory: Path


def data_home() -> Path:
    """``$SECUREFED_HOME``, else ``$XDG_DATA_HOME/securefed``, else ``~/.local/share/securefed``."""
    named = os.environ.get(HOME_VARIABLE)
    if named:
        return Path(named)
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "securefed"


def load_run_tenants(data: DataConfig, run_dir: Path, *, copy: bool = False) -> Tenants:
    """Load ``data.directory`` as it is, or ``data.source`` prepared into the data home (once;
    later runs read the same records), or with ``copy`` into ``run_dir/data``.

    Raises:
        ConfigError, DataFormatError: an unreadable or malformed layout, fewer than 3 tenants,
            or a source that cannot be partitioned as asked (messages name the file or key).
    """
    if data.directory is not None:
        directory = Path(data.directory)
    elif copy:
        directory = run_dir / DATA_DIR
        prepare(data.source, out=directory, config=_partition(data))
    else:
        directory = _prepared_in_home(data)
    tenants = tuple(load_tenants(directory))
    if len(tenants) < 3:
        raise ConfigError(
            f"{directory}: a federation needs at least 3 tenants, found {len(tenants)}"
        )
    metadata = load_federation_metadata(directory)
    segments = None
    if metadata is not None:
        missing = [t.index for t in tenants if t.index not in metadata.group_of_tenant]
        if missing:
            raise ConfigError(
                f"{directory}: federation.json has no segment for tenant {missing[0]}"
            )
        segments = tuple(metadata.group_of_tenant[t.index] for t in tenants)
    return Tenants(tenants, num_classes(tenants), segments, directory)


def peek_run_tenants(data: DataConfig, run_dir: Path, *, copy: bool = False) -> Tenants:
    """What :func:`load_run_tenants` would load, writing nothing: ``data.directory`` as it is,
    the data home's prepared copy if it exists, else ``data.source`` partitioned in memory
    (``directory`` is then where it would be written). Same checks and errors."""
    if data.directory is not None:
        return load_run_tenants(data, run_dir)
    target = run_dir / DATA_DIR if copy else _home_target(data)
    if not copy and target.is_dir():
        return load_run_tenants(data, run_dir)
    loaded = load_source(data.source)
    federation = partition(loaded.x, loaded.y, _partition(data))
    tenants = federation.tenants
    if len(tenants) < 3:
        raise ConfigError(f"{target}: a federation needs at least 3 tenants, found {len(tenants)}")
    return Tenants(tenants, num_classes(tenants), federation.groups, target)


def _partition(data: DataConfig) -> PartitionConfig:
    return PartitionConfig(
        tenants=data.tenants,
        groups=data.groups,
        scheme=data.scheme,
        seed=data.partition_seed,
        samples_per_tenant=data.samples_per_tenant,
    )


def _home_target(data: DataConfig) -> Path:
    """Where the data home keeps ``data.source`` partitioned as ``data`` asks."""
    source = data.source
    if source != "bundled" and Path(source).exists():
        source = str(Path(source).resolve())
    key = {
        "source": source,
        "tenants": data.tenants,
        "groups": data.groups,
        "scheme": data.scheme.value,
        "partition_seed": data.partition_seed,
        "samples_per_tenant": data.samples_per_tenant,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    name = f"{Path(source).name if source != 'bundled' else 'bundled'}-{digest}"
    return data_home() / "prepared" / name


def _prepared_in_home(data: DataConfig) -> Path:
    """The seed layout of ``data.source`` partitioned as ``data`` asks, in the data home:
    prepared into a temporary sibling and renamed, so a reader never sees half of it."""
    target = _home_target(data)
    home, name = target.parent, target.name
    if target.is_dir():
        return target
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the data home {home}: {exc.strerror} (set ${HOME_VARIABLE})"
        ) from None
    staging = home / f".{name}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        prepare(data.source, out=staging, config=_partition(data))
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():  # another run prepared it at the same time: use that one
                raise
    except OSError as exc:
        raise ConfigError(f"cannot prepare {target}: {exc.strerror}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
