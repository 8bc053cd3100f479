"""Where a run's institutions come from: a seed-layout directory, or a source partitioned into
one (written into the run directory, so the run always reads the seed layout).

The declared segments of group mode come from ``federation.json`` (written by ``securefed data
prepare``) or from the configuration's list; a directory without either cannot run declared
group mode, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from securefed.data import (
    PartitionConfig,
    TenantData,
    load_federation_metadata,
    load_tenants,
    num_classes,
    prepare,
)
from securefed.errors import ConfigError
from securefed.runtime.config import DataConfig

__all__ = ["DATA_DIR", "Tenants", "load_run_tenants"]

#: Sub-directory of the run directory that holds the prepared seed layout.
DATA_DIR = "data"


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


def load_run_tenants(data: DataConfig, run_dir: Path) -> Tenants:
    """Load ``data.directory`` as it is, or prepare ``data.source`` into ``run_dir/data`` first.

    Raises:
        ConfigError, DataFormatError: an unreadable or malformed layout, fewer than 3 tenants,
            or a source that cannot be partitioned as asked (messages name the file or key).
    """
    if data.directory is not None:
        directory = Path(data.directory)
    else:
        directory = run_dir / DATA_DIR
        prepare(
            data.source,
            out=directory,
            config=PartitionConfig(
                tenants=data.tenants,
                groups=data.groups,
                scheme=data.scheme,
                seed=data.partition_seed,
                samples_per_tenant=data.samples_per_tenant,
            ),
        )
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
