"""One frozen options object describes a comparison.

CLI flags, TOML config files and the result store's attributes all map to :class:`CompareOptions`,
so a run records exactly how it was computed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from .errors import ConfigError

__all__ = ["CompareOptions", "ALL_METRICS", "HISTOGRAM_DISTANCES", "DEFAULT_MAX_PIXELS"]

#: Every scalar metric ``compare`` can report ('histogram' stands for all the histogram distances).
ALL_METRICS = (
    "manhattan",
    "zero_norm",
    "mse",
    "rmse",
    "psnr",
    "max_abs",
    "ncc",
    "ssim",
    "histogram",
)
#: Histogram distances, each defined as OpenCV's ``compareHist`` (plus Jensen-Shannon).
HISTOGRAM_DISTANCES = ("kl", "js", "chi2", "chi2_alt", "bhattacharyya", "intersection", "correlation")

#: Refuse images that declare more pixels than this before decoding them (decompression bombs).
DEFAULT_MAX_PIXELS = 1 << 30

_CHOICES = {
    "shape": ("error", "crop", "resize"),
    "color": ("gray", "luma", "rgb"),
    "normalize": ("none", "minmax", "zscore", "histogram"),
    "edges": ("none", "sobel", "prewitt"),
    "backend": ("auto", "numpy", "cupy", "emulated-gpu"),
    "on_bad_align": ("unaligned", "fail"),
}

# Metrics that other metrics are derived from: asking for 'rmse' computes 'mse' as well, etc.
_ALIASES = {
    "manhattan_per_pixel": "manhattan",
    "zero_norm_per_pixel": "zero_norm",
    "l1": "manhattan",
    "l0": "zero_norm",
    "max": "max_abs",
    "hist": "histogram",
    **{d: "histogram" for d in HISTOGRAM_DISTANCES},
}


@dataclass(frozen=True)
class CompareOptions:
    """How two images are compared. Immutable; hashable; round-trips through :meth:`to_dict`.

    Parameters
    ----------
    shape : {'error', 'crop', 'resize'}
        What to do when the two images differ in height/width: refuse, crop both to the common
        top-left region, or resize ``moving`` to ``reference``'s shape (bilinear).
    color : {'gray', 'luma', 'rgb'}
        Grey as the plain mean of the channels, BT.601 luma, or per-channel comparison.
    normalize : {'none', 'minmax', 'zscore', 'histogram'}
        Exposure normalisation of each image before comparing (see ``preprocess.normalize``).
    blur : float
        Gaussian sigma (pixels) applied to both images before comparing; 0 disables.
    edges : {'none', 'sobel', 'prewitt'}
        Compare gradient magnitudes instead of intensities.
    edge_threshold : float or None
        With ``edges``, turn magnitudes into binary edge maps (magnitude > threshold).
    align : bool
        Estimate the translation (phase correlation) and compare over the overlap only.
    upsample : int
        Subpixel refinement of the shift to 1/upsample pixel (1 = integer shift).
    mask_zeros : bool
        Treat zero pixels as invalid in alignment (masked normalised cross-correlation).
    min_confidence : 'auto' or float
        With ``align``: the floor below which an estimated shift is not trusted. ``'auto'``: phase
        correlation's ``significance`` (its confidence over what unrelated images of that size
        give) must reach ``align.AUTO_SIGNIFICANCE`` (5.5, measured on real pairs); masked NCC
        has no automatic floor. A number in [0, 1]: the ``confidence`` itself must reach it
        (0 trusts every shift).
    max_shift : float
        With ``align``: the largest plausible shift per axis, as a fraction of the height/width
        when below 1 (default 0.25), else in pixels.
    on_bad_align : {'unaligned', 'fail'}
        An untrusted alignment: compare the pair unaligned, with a warning and ``align_ok``
        False, or fail the pair (in a batch: the item is recorded as failed).
    tolerance : float
        The zero norm counts pixels with |difference| > tolerance.
    data_range : float or None
        Data range for PSNR and SSIM; None derives it from the dtype (see ``compare``).
    bins : int
        Histogram bins over the value range.
    bins_range : 'auto', 'dtype' or 'LO:HI'
        The histograms' value range. ``'dtype'``: the dtype's (0-256 for uint8, 0-65536 for
        uint16), float data: the pair's. ``'auto'`` (default): uint8 as ``'dtype'``; uint16 from 0 to
        1.25 x the data's maximum (the pair's in ``compare``; a sample of 16 frames in a run, fixed
        for the whole run and recorded in the store), so a calcium-imaging frame with values 254-3250
        spans about 190 of 256 bins, not 13. ``'LO:HI'``: in the input's units (not with ``normalize`` minmax /
        zscore or ``edges``). Values outside the range are not counted (OpenCV's ``calcHist``).
    metrics : tuple of str or None
        The metrics to compute (None: all).
    backend : {'auto', 'numpy', 'cupy', 'emulated-gpu'}
        'emulated-gpu': the CuPy code path on the CPU (a CUDA emulator), to check a GPU job on a
        machine without a GPU; slow.
    max_pixels : int
        Pixel budget per image, checked before decoding.
    page : int
        Page (frame) of a multi-page TIFF or GIF to read.
    """

    shape: str = "error"
    color: str = "gray"
    normalize: str = "none"
    blur: float = 0.0
    edges: str = "none"
    edge_threshold: float | None = None
    align: bool = False
    upsample: int = 1
    mask_zeros: bool = False
    min_confidence: float | str = "auto"
    max_shift: float = 0.25
    on_bad_align: str = "unaligned"
    tolerance: float = 0.0
    data_range: float | None = None
    bins: int = 256
    bins_range: str = "auto"
    metrics: tuple[str, ...] | None = None
    backend: str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS
    page: int = 0
    # SSIM constants (Wang et al. 2004), fixed by the method; recorded for the store.
    ssim_sigma: float = field(default=1.5, repr=False)
    ssim_k1: float = field(default=0.01, repr=False)
    ssim_k2: float = field(default=0.03, repr=False)

    def __post_init__(self):
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} {value!r} is not one of {', '.join(choices)}")
        if self.metrics is not None:
            object.__setattr__(self, "metrics", _canonical_metrics(self.metrics))
        if not (_finite(self.blur) and self.blur >= 0):
            raise ConfigError(f"--blur {self.blur} must be a finite number >= 0 (a Gaussian sigma in pixels)")
        if int(self.upsample) != self.upsample or self.upsample < 1:
            raise ConfigError(f"--upsample {self.upsample} must be a whole number >= 1")
        object.__setattr__(self, "upsample", int(self.upsample))
        if not (_finite(self.tolerance) and self.tolerance >= 0):
            raise ConfigError(f"--tolerance {self.tolerance} must be a finite number >= 0")
        if self.data_range is not None and not (_finite(self.data_range) and self.data_range > 0):
            raise ConfigError(f"--data-range {self.data_range} must be a finite number > 0")
        if int(self.bins) != self.bins or not (2 <= self.bins <= 65536):
            raise ConfigError(f"--bins {self.bins} must be a whole number from 2 to 65536")
        object.__setattr__(self, "bins", int(self.bins))
        object.__setattr__(self, "bins_range", _check_bins_range(self.bins_range, self))
        if self.edge_threshold is not None and self.edges == "none":
            raise ConfigError("--edge-threshold needs --edges sobel or --edges prewitt")
        if self.edge_threshold is not None and not (_finite(self.edge_threshold) and self.edge_threshold >= 0):
            raise ConfigError(f"--edge-threshold {self.edge_threshold} must be a finite number >= 0 (a gradient "
                              "magnitude)")
        if int(self.max_pixels) != self.max_pixels or self.max_pixels < 1:
            raise ConfigError(f"--max-pixels {self.max_pixels} must be a whole number >= 1")
        if int(self.page) != self.page or self.page < 0:
            raise ConfigError(f"--page {self.page} must be a whole number >= 0")
        if self.min_confidence != "auto":
            try:
                value = float(self.min_confidence)
            except (TypeError, ValueError):
                value = math.nan
            if not (0.0 <= value <= 1.0):
                raise ConfigError(f"--min-confidence {self.min_confidence!r} must be 'auto' or a number from 0 to 1")
            object.__setattr__(self, "min_confidence", value)
        if not (_finite(self.max_shift) and float(self.max_shift) > 0):
            raise ConfigError(
                f"--max-shift {self.max_shift} must be > 0: a fraction of the frame (below 1) or pixels"
            )
        object.__setattr__(self, "max_shift", float(self.max_shift))
        if (self.upsample > 1 or self.mask_zeros) and not self.align:
            raise ConfigError("--upsample and --mask-zeros refine alignment: add --align")

    def wants(self, metric: str) -> bool:
        """True when ``metric`` (a name of ALL_METRICS) is to be computed."""
        return self.metrics is None or metric in self.metrics

    def replace(self, **changes) -> CompareOptions:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["metrics"] is not None:
            d["metrics"] = list(d["metrics"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CompareOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)}: known are {', '.join(sorted(known))}")
        d = dict(d)
        if d.get("metrics") is not None:
            d["metrics"] = tuple(d["metrics"])
        return cls(**d)


def _finite(value) -> bool:
    """True for a real, finite number (not inf, not nan, not a bool or a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            return False
    return math.isfinite(value)


def parse_bins_range(value) -> tuple[float, float] | None:
    """``'LO:HI'`` (or a pair) as floats; None for ``'auto'`` / ``'dtype'``."""
    if isinstance(value, str) and value in ("auto", "dtype"):
        return None
    try:
        lo, hi = (float(v) for v in (value.split(":") if isinstance(value, str) else value))
    except (TypeError, ValueError):
        raise ConfigError(f"--bins-range {value!r} must be auto, dtype or LO:HI (e.g. 0:4096)") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ConfigError(f"--bins-range {value!r}: need finite LO < HI")
    return lo, hi


def _check_bins_range(value, options) -> str:
    rng = parse_bins_range(value)
    if rng is None:
        return value
    if options.normalize in ("minmax", "zscore") or options.edges != "none":
        raise ConfigError(f"--bins-range {value} is in the input's units: not with --normalize "
                          f"{options.normalize} / --edges {options.edges}; use auto or dtype")
    return f"{rng[0]:g}:{rng[1]:g}"


def _canonical_metrics(metrics) -> tuple[str, ...]:
    if isinstance(metrics, str):
        metrics = [m for m in metrics.split(",") if m.strip()]
    out = []
    for m in metrics:
        m = m.strip().lower()
        m = _ALIASES.get(m, m)
        if m not in ALL_METRICS:
            raise ConfigError(
                f"--metrics: unknown metric {m!r}; known are {', '.join(ALL_METRICS)} "
                f"(and the histogram distances {', '.join(HISTOGRAM_DISTANCES)})"
            )
        if m not in out:
            out.append(m)
    if not out:
        raise ConfigError("--metrics is empty: name at least one metric, e.g. --metrics manhattan,ssim")
    return tuple(m for m in ALL_METRICS if m in out)
