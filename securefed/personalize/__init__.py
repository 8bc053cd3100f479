"""Personalized aggregation: who gets which weighted combination of the models (DESIGN §4).

Every mode is a row-stochastic weight matrix ξ (N x N, row ``i`` for target ``i``) and every client
ends up with ``u_i = Σ_j ξ_ij·w_j``:

* ``local`` (:func:`local_weights`): ξ = I; nothing is exchanged.
* ``fedavg`` (:func:`fedavg_weights`): every entry 1/N; one output, the server-visible average.
* ``fedamp`` (:func:`fedamp_weights`): attention ``ξ_ij = alpha·e^(-‖w_i - w_j‖²/sigma)/sigma``,
  sigma absolute or relative to the round's median squared distance, ``ξ_ii = 1 - Σ_{j≠i} ξ_ij``
  clamped at 0.
* ``heurfedamp`` (:func:`heurfedamp_weights`): fixed ``ξ_ii``, the rest a softmax of sigma·cosine,
  over centred (default) or raw weights.
* ``group`` (:func:`group_weights`): uniform weights inside a fixed partition, target-independent,
  so only group sums can ever leak.

This package is the plaintext reference (numpy only). In the secure protocol the server never sees
a personalized model; it computes ξ from secret sketches, applies the weight policy of
:mod:`securefed.secagg.policy` (``enforce_policy``), and every contributor checks it
(``check_weights``), also after dropouts, when targets renormalise with :func:`renormalise_row`.
"""

from securefed.personalize.modes import PersonalizationMode
from securefed.personalize.partition import partition_from_distances
from securefed.personalize.sketch import (
    SketchConfig,
    SketchConstruction,
    Sketcher,
    SketchKind,
    centred_cosines_from_sketches,
    cosines_from_sketches,
    squared_distances_from_sketches,
)
from securefed.personalize.weights import (
    cosine_similarities,
    fedamp_weights,
    fedamp_weights_from_distances,
    fedavg_weights,
    group_weights,
    heurfedamp_weights,
    heurfedamp_weights_from_cosines,
    local_weights,
    personalized_models,
    renormalise_row,
    squared_distances,
)

__all__ = [
    "PersonalizationMode",
    "SketchConfig",
    "SketchConstruction",
    "SketchKind",
    "Sketcher",
    "centred_cosines_from_sketches",
    "cosine_similarities",
    "cosines_from_sketches",
    "fedamp_weights",
    "fedamp_weights_from_distances",
    "fedavg_weights",
    "group_weights",
    "heurfedamp_weights",
    "heurfedamp_weights_from_cosines",
    "local_weights",
    "partition_from_distances",
    "personalized_models",
    "renormalise_row",
    "squared_distances",
    "squared_distances_from_sketches",
]
