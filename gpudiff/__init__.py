"""gpudiff: how different are these two images? At archive scale, on GPU (CuPy) or CPU (NumPy)."""

from .errors import BackendUnavailable, ConfigError, GpudiffError, InputError
from .compare import Comparison, compare
from .options import CompareOptions

__version__ = "0.1.0"

__all__ = [
    "compare",
    "Comparison",
    "CompareOptions",
    "GpudiffError",
    "InputError",
    "ConfigError",
    "BackendUnavailable",
    "__version__",
]
