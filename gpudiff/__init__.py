"""gpudiff: how different are these two images? At archive scale, on GPU (CuPy) or CPU (NumPy).

The one call most people need is :func:`compare`; the building blocks it uses are public too.
"""

from . import _sigterm  # noqa: F401 - first: as `gpudiff run`, a SIGTERM in the imports below exits 75
from ._version import __version__
from .errors import BackendUnavailable, ConfigError, GpudiffError, InputError
from .io import read_image
from .options import CompareOptions
from .pair import (
    Alignment,
    Comparison,
    PairSums,
    compare,
    histogram_distances,
    pair_sums,
    phase_cross_correlation,
    prepare_pair,
    register_overlap,
    structural_similarity,
)
from .sequence import (
    BackgroundModel,
    BackgroundOptions,
    DedupOptions,
    Deduplicator,
    EventOptions,
    background_subtract,
    change_score,
    detect_events,
    detect_sequence,
    flow_consistency,
    flow_magnitude_stats,
    optical_flow,
    optical_flow_lk,
    optical_flow_dis,
    optical_flow_tvl1,
    track_corners,
)


def __getattr__(name):
    # ``dedup`` schedules its work on Dask (gpudiff.engine): loaded on first use, so that
    # ``import gpudiff`` stays the pairwise maths and does not pull in zarr and dask.
    if name == "dedup":
        from .engine import dedup  # noqa: PLC0415

        return dedup
    raise AttributeError(f"module 'gpudiff' has no attribute {name!r}")


__all__ = [
    "compare",
    "Comparison",
    "CompareOptions",
    "pair_sums",
    "PairSums",
    "phase_cross_correlation",
    "register_overlap",
    "Alignment",
    "structural_similarity",
    "histogram_distances",
    "prepare_pair",
    "read_image",
    "dedup",
    "Deduplicator",
    "DedupOptions",
    "change_score",
    "detect_events",
    "detect_sequence",
    "EventOptions",
    "BackgroundModel",
    "BackgroundOptions",
    "background_subtract",
    "optical_flow",
    "optical_flow_lk",
    "optical_flow_tvl1",
    "optical_flow_dis",
    "flow_consistency",
    "flow_magnitude_stats",
    "track_corners",
    "GpudiffError",
    "InputError",
    "ConfigError",
    "BackendUnavailable",
    "__version__",
]
