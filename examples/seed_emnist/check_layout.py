"""Check a seed-layout directory before a run: tenants, shapes, classes, sizes, segments.

    .venv/bin/python examples/seed_emnist/check_layout.py DIR

Loads DIR exactly as ``securefed run`` and ``securefed demo --data DIR`` load a ``[data]
directory`` (``securefed.runtime.tenants.load_run_tenants``, which calls
``securefed.data.load_tenants``: ``allow_pickle=False``, shapes, dtypes, label rules, matching
lengths, at least 3 tenants, and a segment in ``federation.json`` for every tenant if that file
exists) and prints what a run would see. Exits 0 if the directory loads, 2 with the loader's
message (which names the offending file) if it does not. Warnings -- a declared segment too small
for group mode, ``federation.json`` sizes that differ from the files -- are printed but do not
change the exit status: other modes can still run. Reads only; writes nothing; needs no torch.
"""

from __future__ import annotations

import sys
from pathlib import Path

from securefed.data import FederationMetadata, load_federation_metadata
from securefed.errors import ConfigError
from securefed.runtime.config import DataConfig
from securefed.runtime.tenants import Tenants, load_run_tenants

USAGE = "usage: check_layout.py DIR"

# Group mode's smallest segment with the runtime's defaults: max(3, k_min 2 + colluders 1)
# (securefed/personalize/rounds.py, minimum_group_size). A smaller one is refused before the run
# starts (securefed/runtime/engine/settings.py, EngineSettings.check_partition).
MIN_SEGMENT = 3


def main(argv: list[str]) -> int:
    """Check the directory ``argv[0]``; 0 if a run can load it, 2 if not (or on bad usage)."""
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        return 2
    directory = Path(argv[0])
    try:
        loaded = load_run_tenants(DataConfig(directory=str(directory)), directory)
        metadata = load_federation_metadata(directory)
    except (ConfigError, OSError) as exc:  # DataFormatError is a ConfigError
        print(f"not loadable: {exc}", file=sys.stderr)
        return 2
    _summary(directory, loaded)
    for warning in _segments(loaded, metadata):
        print(f"warning        {warning}")
    return 0


def _summary(directory: Path, loaded: Tenants) -> None:
    tenants = loaded.tenants
    train = [len(t.train_y) for t in tenants]
    test = [len(t.test_y) for t in tenants]
    indices = [t.index for t in tenants]
    contiguous = indices == list(range(indices[0], indices[0] + len(indices)))
    shown = f"{indices[0]}..{indices[-1]}" if contiguous else ", ".join(map(str, indices))
    print(f"directory      {directory}")
    print(f"tenants        {len(tenants)} (indices {shown})")
    print(f"sample shape   {tenants[0].sample_shape} per record (as loaded, float32)")
    print(f"classes        {loaded.num_classes} (largest label + 1, over all tenants)")
    print(f"train records  {min(train)}..{max(train)} per tenant, {sum(train)} in all")
    print(f"test records   {min(test)}..{max(test)} per tenant, {sum(test)} in all")


def _segments(loaded: Tenants, metadata: FederationMetadata | None) -> list[str]:
    """Print the declared segments; return the warnings about them."""
    if metadata is None or loaded.segments is None:
        print(
            "segments       none declared (no federation.json): group mode needs "
            '[personalize] segments = [...] (one label per tenant) or segments = "learned"'
        )
        return []
    sizes: dict[int, int] = {}
    for segment in loaded.segments:
        sizes[segment] = sizes.get(segment, 0) + 1
    shown = ", ".join(f"{g}: {n}" for g, n in sorted(sizes.items()))
    print(f"segments       declared in federation.json ({metadata.scheme.value}): sizes {shown}")
    warnings = [
        f"segment {g} has {n} tenants; group mode needs at least {MIN_SEGMENT} per segment"
        for g, n in sorted(sizes.items())
        if n < MIN_SEGMENT
    ]
    for tenant in loaded.tenants:
        recorded = metadata.sizes.get(tenant.index)
        actual = (len(tenant.train_y), len(tenant.test_y))
        if recorded is not None and tuple(recorded) != actual:
            warnings.append(
                f"tenant {tenant.index} has {actual[0]} train / {actual[1]} test records, "
                f"federation.json recorded {recorded[0]} / {recorded[1]} (files changed since "
                "prepare?)"
            )
    return warnings


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
