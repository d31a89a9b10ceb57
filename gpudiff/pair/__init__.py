"""Pairwise difference: how different are these two images?

The maths of one pair, written once against the array namespace ``xp`` (NumPy or CuPy). It knows no
store, scheduler or CLI. The steps, in the order :func:`compare` runs them, one module each:

- ``_preprocess``: grey, shape policy (crop/resize), exposure normalization, blur, edges;
- ``_align``: FFT phase cross-correlation (subpixel), masked NCC, and the shift's significance;
- ``_overlap``: the parts of the two images that cover one another after the shift;
- ``_sums``: the fused pass, every pixel norm and both histograms in one read (:func:`pair_sums`
  checks and dispatches), in three implementations that compute the same numbers:
  ``_sums_reference`` (array code on ``xp``), ``_sums_numba`` (compiled, CPU) and ``_sums_cuda``
  (the host side of ``kernels/pair_stats.cu``); ``_sums_core`` holds :class:`PairSums` and how
  raw sums become one;
- ``_histograms``: histogram distances (KL, JS, chi-square, Bhattacharyya, intersection, correlation);
- ``_ssim``: structural similarity;
- ``_compare``: the metrics from the sums, and :func:`compare`, which runs the steps;
- ``_diffmap``: the per-pixel difference map and its colour rendering.
"""

from ._align import Alignment, alignment_problem, phase_cross_correlation
from ._overlap import register_overlap
from ._compare import Comparison, compare, metrics_from_sums
from ._diffmap import absolute_difference, colorize, write_heatmap
from ._histograms import HISTOGRAM_DISTANCES, histogram_distances, kl_divergence, js_divergence
from ._preprocess import (
    PreparedPair,
    edge_magnitude,
    gaussian_blur,
    match_shapes,
    normalize,
    prepare_pair,
    to_gray,
)
from ._ssim import structural_similarity
from ._sums import PairSums, pair_sums

__all__ = [
    "compare",
    "Comparison",
    "metrics_from_sums",
    "pair_sums",
    "PairSums",
    "prepare_pair",
    "PreparedPair",
    "to_gray",
    "match_shapes",
    "normalize",
    "gaussian_blur",
    "edge_magnitude",
    "phase_cross_correlation",
    "register_overlap",
    "alignment_problem",
    "Alignment",
    "structural_similarity",
    "histogram_distances",
    "HISTOGRAM_DISTANCES",
    "kl_divergence",
    "js_divergence",
    "absolute_difference",
    "colorize",
    "write_heatmap",
]
