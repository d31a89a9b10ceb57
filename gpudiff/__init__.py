"""gpudiff: how different are these two images? At archive scale, on GPU (CuPy) or CPU (NumPy).

The one call most people need is :func:`compare`; the building blocks it uses are public too.
"""

from .align import Alignment, phase_cross_correlation, register_overlap
from .background import BackgroundModel, BackgroundOptions, background_subtract
from .compare import Comparison, compare
from .corrupt import EventOptions, detect_events, detect_sequence
from .dedup import DedupOptions, Deduplicator, change_score, dedup
from .errors import BackendUnavailable, ConfigError, GpudiffError, InputError
from .flow import flow_magnitude_stats, optical_flow_lk, track_corners
from .histograms import histogram_distances
from .io.images import read_image
from .metrics import PairSums, pair_sums
from .options import CompareOptions
from .preprocess import prepare_pair
from .ssim import structural_similarity

__version__ = "0.1.0"

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
    "optical_flow_lk",
    "flow_magnitude_stats",
    "track_corners",
    "GpudiffError",
    "InputError",
    "ConfigError",
    "BackendUnavailable",
    "__version__",
]
