"""gpudiff: how different are these two images? At archive scale, on GPU (CuPy) or CPU (NumPy).

The one call most people need is :func:`compare`; the building blocks it uses are public too.
"""

from .align import Alignment, phase_cross_correlation, register_overlap
from .compare import Comparison, compare
from .errors import BackendUnavailable, ConfigError, GpudiffError, InputError
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
    "GpudiffError",
    "InputError",
    "ConfigError",
    "BackendUnavailable",
    "__version__",
]
