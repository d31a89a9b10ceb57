"""``compare``: every decision a careful person makes, then every metric from one read of the pair.

The flow for one pair: read/validate -> device -> prepare (colour, shape, exposure, blur, edges) ->
align (optional) -> fused pass (norms, NCC sums, both histograms) -> SSIM (optional) -> derived
metrics. Only a few numbers come back to the host.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

from .. import backend as _backend
from ..errors import InputError
from ._histograms import HISTOGRAM_DISTANCES, histogram_distances
from ..options import CompareOptions

__all__ = ["Comparison", "compare", "metrics_from_sums"]


@dataclass
class Comparison:
    """The result of comparing two images. ``None`` marks a metric that was not asked for.

    Attributes follow the ``--json`` keys: ``manhattan`` (sum of |d| over pixels and channels),
    ``manhattan_per_pixel`` (divided by the pixels compared), ``zero_norm`` (pixels where |d| >
    tolerance in any channel) and ``zero_norm_per_pixel``, ``mse``/``rmse`` (over all samples),
    ``psnr`` (dB; ``inf`` for identical images), ``max_abs``, ``ncc``, ``ssim``, ``histogram``
    (distance name -> value, mean over channels), ``shift`` ((dy, dx) when aligned), ``confidence``,
    ``pixels`` (pixels compared: the overlap when aligned), ``backend``, and ``channels`` (per-channel
    values with ``color='rgb'``).
    """

    manhattan: float | None = None
    manhattan_per_pixel: float | None = None
    zero_norm: int | None = None
    zero_norm_per_pixel: float | None = None
    mse: float | None = None
    rmse: float | None = None
    psnr: float | None = None
    max_abs: float | None = None
    ncc: float | None = None
    ssim: float | None = None
    histogram: dict | None = None
    shift: tuple[float, float] | None = None
    confidence: float | None = None
    #: With ``align``: confidence over what unrelated images of this size give (see ``Alignment``).
    significance: float | None = None
    #: With ``align``: False when the estimated shift was not trusted (``alignment_problem``):
    #: then ``shift`` is (0, 0), the pair was compared unaligned, and ``align_warning`` says why
    #: and holds the rejected estimate.
    align_ok: bool | None = None
    align_warning: str | None = None
    #: The histograms' value range (lo, hi) when they were computed (``bins_range``).
    histogram_range: tuple[float, float] | None = None
    pixels: int = 0
    backend: str = "numpy"
    data_range: float | None = None
    channels: list[dict] | None = None
    steps: tuple[str, ...] = field(default=())
    #: Where the compared region lies in the (prepared) reference: (r0, r1, c0, c1); the whole
    #: image without alignment.
    window: tuple[int, int, int, int] | None = None
    #: |difference| of the compared (prepared, aligned) pair, (h, w) float32 on the host, covering
    #: ``window``; only with ``compare(..., diff_map=True)``.
    diff_map: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """JSON-ready: plain floats/ints; infinite PSNR becomes ``None`` (JSON has no infinity)."""
        d = {
            "manhattan": self.manhattan,
            "manhattan_per_pixel": self.manhattan_per_pixel,
            "zero_norm": self.zero_norm,
            "zero_norm_per_pixel": self.zero_norm_per_pixel,
            "mse": self.mse,
            "rmse": self.rmse,
            "psnr": self.psnr,
            "max_abs": self.max_abs,
            "ncc": self.ncc,
            "ssim": self.ssim,
            "histogram": dict(self.histogram) if self.histogram is not None else None,
            "shift": list(self.shift) if self.shift is not None else None,
            "confidence": self.confidence,
            "significance": self.significance,
            "align_ok": self.align_ok,
            "align_warning": self.align_warning,
            "histogram_range": list(self.histogram_range) if self.histogram_range is not None else None,
            "pixels": self.pixels,
            "backend": self.backend,
            "data_range": self.data_range,
            "steps": list(self.steps),
        }
        if self.channels is not None:
            d["channels"] = [dict(c) for c in self.channels]
        return _json_safe(d)

    def format_text(self) -> str:
        """One metric per line, as the original answer printed them."""
        lines = []
        if self.manhattan is not None:
            lines.append(f"Manhattan norm: {_g(self.manhattan)} / per pixel: {_g(self.manhattan_per_pixel)}")
        if self.zero_norm is not None:
            lines.append(f"Zero norm: {self.zero_norm} / per pixel: {_g(self.zero_norm_per_pixel)}")
        if self.mse is not None:
            lines.append(f"MSE: {_g(self.mse)} / RMSE: {_g(self.rmse)}")
            lines.append(f"PSNR: {_g(self.psnr)} dB (data range {_g(self.data_range)})")
        if self.max_abs is not None:
            lines.append(f"Max abs difference: {_g(self.max_abs)}")
        if self.ncc is not None:
            lines.append(f"NCC: {_g(self.ncc)}")
        if self.ssim is not None:
            lines.append(f"SSIM: {_g(self.ssim)}")
        if self.histogram is not None:
            h = self.histogram
            over = ""
            if self.histogram_range is not None:
                over = f" (over {_g(self.histogram_range[0])}-{_g(self.histogram_range[1])})"
            lines.append(
                f"Histogram{over}: " + ", ".join(f"{k} {_g(h[k])}" for k in HISTOGRAM_DISTANCES if k in h)
            )
        if self.align_ok is False:
            lines.append(f"Alignment REJECTED, compared unaligned: {self.align_warning}")
        elif self.shift is not None:
            lines.append(
                f"Shift (dy, dx): {_g(self.shift[0])}, {_g(self.shift[1])} (confidence {_g(self.confidence)}, "
                f"significance {_g(self.significance)})"
            )
        if self.channels:
            for i, c in enumerate(self.channels):
                parts = [f"{k} {_g(v)}" for k, v in c.items() if not isinstance(v, dict) and v is not None]
                lines.append(f"Channel {i}: " + ", ".join(parts))
        lines.append(f"Pixels compared: {self.pixels} / backend: {self.backend}")
        return "\n".join(lines)


def _g(v) -> str:
    """Numbers for people: integers as such, large values with 2 decimals, small with 6."""
    if v is None:
        return "n/a"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0.0"
    a = abs(v)
    if a < 1e-3:
        return f"{v:.6g}"
    text = f"{v:.2f}" if a >= 100 else f"{v:.6f}"
    text = text.rstrip("0")
    return text + "0" if text.endswith(".") else text


def _json_safe(obj):
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


def _load(image, name: str, options: CompareOptions):
    """A path is read (with the pixel budget); an array is validated. Returns (array, label)."""
    from ..io._images import read_image  # noqa: PLC0415
    from ..io._validate import validate_array  # noqa: PLC0415

    if isinstance(image, (str, os.PathLike)):
        return read_image(image, page=options.page, max_pixels=options.max_pixels), str(image)
    if image is None:
        raise InputError(f"{name} is None: give an image array or a path")
    return validate_array(image, name=name), name


def compare(
    reference, moving, *, options: CompareOptions | None = None, diff_map: bool = False, **kwargs
) -> Comparison:
    """How different are these two images?

    Parameters
    ----------
    reference, moving : array_like or path
        NumPy or CuPy arrays, (H, W) or (H, W, C), or paths to image files.
    options : CompareOptions, optional
        How to compare; keyword arguments (the same names) override its fields.
    **kwargs
        Fields of :class:`CompareOptions` (``shape``, ``color``, ``normalize``, ``blur``, ``edges``,
        ``align``, ``upsample``, ``mask_zeros``, ``tolerance``, ``data_range``, ``bins``,
        ``metrics``, ``backend``, ...).
    diff_map : bool
        Also return the |difference| map of the compared pair (``Comparison.diff_map``).

    Returns
    -------
    Comparison

    Notes
    -----
    With ``align=True`` the shift (scikit-image's ``phase_cross_correlation`` convention: if
    ``B = np.roll(A, (3, -5), axis=(0, 1))`` the shift is ``(-3, 5)``) is estimated on the grey
    images after the colour, shape and exposure steps and before blur and edges; a fractional shift
    is applied to ``moving`` by linear interpolation, and every metric is taken over the overlap
    only; per-pixel values divide by the overlap's size. With ``mask_zeros`` the shift is whole
    pixels (masked normalised cross-correlation, Padfield 2012).
    """
    if options is None:
        options = CompareOptions(**kwargs)
    elif kwargs:
        options = options.replace(**kwargs)

    xp = _pick_namespace(options, reference, moving)
    ref, ref_name = _load(reference, "reference", options)
    mov, mov_name = _load(moving, "moving", options)
    ref = _backend.asarray(ref, xp)
    mov = _backend.asarray(mov, xp)
    return _compare_arrays(ref, mov, options, xp, names=(ref_name, mov_name), diff_map=diff_map)


def _pick_namespace(options: CompareOptions, *images) -> ModuleType:
    if options.backend == "auto":
        given = _backend.get_namespace(*images)
        if given is not np:
            return given
    return _backend.resolve_backend(options.backend)


class HistogramMemo:
    """Histograms of frames already counted, for a run over a sequence: frame ``t`` is the moving
    frame of pair ``(t-1, t)`` and the reference of ``(t, t+1)``, so its histogram is counted once.

    Only a frame that reached the fused pass unchanged (no alignment, exposure, blur or edge step
    altered it) is remembered, keyed by its index, the value range and the bin count.
    """

    def __init__(self):
        self._h: dict = {}

    def get(self, key, value_range, bins):
        return self._h.get((key, value_range, bins))

    def put(self, key, value_range, bins, hist) -> None:
        self._h[(key, value_range, bins)] = hist

    def forget(self, key) -> None:
        for k in [k for k in self._h if k[0] == key]:
            del self._h[k]


def _compare_arrays(
    ref, mov, options: CompareOptions, xp, *, names, diff_map=False, memo: HistogramMemo | None = None, keys=None
) -> Comparison:
    """:func:`compare` on two arrays already on ``xp``'s device; ``memo``/``keys``: see :class:`HistogramMemo`."""
    from ._preprocess import prepare_pair  # noqa: PLC0415

    registration = _Registration(options, xp, names) if options.align else None
    prepared = prepare_pair(ref, mov, options, names=names, register=registration)
    a, b = prepared.reference, prepared.moving
    sums, (lo, hi) = _fused_pass(ref, mov, prepared, options, xp, memo=memo, keys=keys)
    result = metrics_from_sums(sums, options, data_range=prepared.data_range)

    if options.wants("ssim"):
        result.ssim = _ssim(prepared, options)
    if diff_map:
        from ._diffmap import absolute_difference  # noqa: PLC0415

        result.diff_map = _backend.to_host(absolute_difference(a, b))  # sync
    window = None
    if registration is not None:
        registration.record(result)
        window = registration.window
    if options.wants("histogram"):
        result.histogram_range = (float(lo), float(hi))
    result.window = window if window is not None else (0, a.shape[0], 0, a.shape[1])
    result.backend = _backend.backend_name(xp)
    result.steps = tuple(prepared.steps)
    return result


class _Registration:
    """The ``register`` step :func:`prepare_pair` calls with ``align``, and what it found.

    Estimates the shift on the grey pair (masked with ``mask_zeros``); a shift
    :func:`alignment_problem` does not trust fails the pair (``on_bad_align='fail'``) or leaves it
    unaligned, with the reason kept; a trusted one cuts the pair to its overlap (``window``).
    """

    def __init__(self, options: CompareOptions, xp, names):
        self.options = options
        self.xp = xp
        self.names = names
        self.alignment = None
        self.window = None
        self.rejected: list[str] = []  # why the estimated shift was not applied

    def __call__(self, a, b):
        from ._align import alignment_problem, phase_cross_correlation  # noqa: PLC0415
        from ._overlap import overlap_window, register_overlap  # noqa: PLC0415

        options, xp, names = self.options, self.xp, self.names
        ga = a if a.ndim == 2 else a.mean(axis=-1, dtype=xp.float32)
        gb = b if b.ndim == 2 else b.mean(axis=-1, dtype=xp.float32)
        masks = {}
        if options.mask_zeros:
            masks = {"reference_mask": ga != 0, "moving_mask": gb != 0}
        alignment = self.alignment = phase_cross_correlation(ga, gb, upsample_factor=options.upsample, **masks)
        problem = alignment_problem(
            alignment, ga.shape, min_confidence=options.min_confidence, max_shift=options.max_shift
        )
        if problem is not None:
            dy, dx = alignment.shift
            why = f"{problem}; the estimate was ({dy:g}, {dx:g})"
            if options.on_bad_align == "fail":
                raise InputError(
                    f"{names[0]} vs {names[1]}: alignment not trusted: {why}. Compare without --align, "
                    "or set --min-confidence / --max-shift, or --on-bad-align unaligned"
                )
            self.rejected.append(why)
            return a, b, "align rejected"
        self.window = overlap_window(a.shape, b.shape, alignment.shift)
        a, b = register_overlap(a, b, alignment.shift)
        dy, dx = alignment.shift
        return a, b, f"align({dy:g},{dx:g})"

    def record(self, result: Comparison) -> None:
        """The shift (``(0, 0)`` when rejected), its confidence and significance, and the verdict."""
        alignment = self.alignment
        if alignment is None:
            return
        result.align_ok = not self.rejected
        result.shift = tuple(float(s) for s in alignment.shift) if result.align_ok else (0.0, 0.0)
        result.confidence = float(alignment.confidence)
        result.significance = None if math.isnan(alignment.significance) else float(alignment.significance)
        result.align_warning = self.rejected[0] if self.rejected else None


def _fused_pass(ref, mov, prepared, options: CompareOptions, xp, *, memo, keys):
    """``pair_sums`` of the prepared pair, and the histograms' (lo, hi).

    With ``memo``, a frame that reached the pass unchanged (``a is ref``, ``b is mov``) has its
    histogram taken from the memo (reference) or put in it (moving).
    """
    from ._sums import pair_sums  # noqa: PLC0415

    a, b = prepared.reference, prepared.moving
    want_hist = options.wants("histogram")
    lo, hi = _histogram_range(options, prepared, xp) if want_hist else prepared.value_range
    center = 0.0 if a.dtype.kind in "ui" else 0.5 * (lo + hi)
    known = None
    remember = want_hist and memo is not None
    if remember and a is ref:
        known = memo.get(keys[0], (lo, hi), options.bins)
    sums = pair_sums(
        a,
        b,
        tolerance=options.tolerance,
        center=center,
        bins=options.bins,
        hist_range=(lo, hi) if want_hist else None,
        hist_a=known,
    )
    if remember and b is mov:
        memo.put(keys[1], (lo, hi), options.bins, sums.hist_b)
    return sums, (lo, hi)


def _ssim(prepared, options: CompareOptions) -> float:
    """SSIM of the prepared pair with the options' window and constants."""
    from ._ssim import structural_similarity  # noqa: PLC0415

    return float(
        structural_similarity(
            prepared.reference,
            prepared.moving,
            data_range=prepared.data_range,
            sigma=options.ssim_sigma,
            k1=options.ssim_k1,
            k2=options.ssim_k2,
        )
    )


def _histogram_range(options: CompareOptions, prepared, xp) -> tuple[float, float]:
    """The histograms' (lo, hi) for ``options.bins_range`` (see CompareOptions)."""
    from ..options import parse_bins_range  # noqa: PLC0415

    explicit = parse_bins_range(options.bins_range)
    if explicit is not None:
        return explicit
    lo, hi = prepared.value_range
    if options.bins_range == "auto" and (lo, hi) == (0.0, 65536.0):  # uint16 in its own units
        top = float(max(xp.max(prepared.reference), xp.max(prepared.moving)))  # sync
        return 0.0, auto_top(top)
    return lo, hi


def auto_top(data_max: float) -> float:
    """The upper end of the automatic uint16 histogram range: 1.25 x the data's maximum (at least 16
    bins' worth of values), a whole number, at most 65536."""
    return float(min(65536.0, max(256.0, math.ceil(1.25 * (data_max + 1)))))


def metrics_from_sums(sums, options: CompareOptions, *, data_range: float) -> Comparison:
    """Derive every requested metric from the additive sums of the fused pass.

    Notes
    -----
    With ``n`` pixels and ``C`` channels: Manhattan = sum |d| over pixels and channels; zero norm =
    pixels where any channel differs by more than the tolerance; MSE = sum d^2 / (n C);
    PSNR = 10 log10(R^2 / MSE); NCC = cov(a, b) / sqrt(var a var b) over all samples (1.0 when both
    images are constant, 0.0 when exactly one is).
    """
    n = int(sums.n)
    C = len(sums.l1)
    N = n * C
    r = Comparison(pixels=n, data_range=float(data_range))
    per_channel = [dict() for _ in range(C)] if C > 1 else None
    if options.wants("manhattan"):
        r.manhattan = float(np.sum(sums.l1))
        r.manhattan_per_pixel = r.manhattan / n if n else 0.0
        if per_channel:
            for c in range(C):
                per_channel[c]["manhattan"] = float(sums.l1[c])
    if options.wants("zero_norm"):
        r.zero_norm = int(sums.l0_any)
        r.zero_norm_per_pixel = r.zero_norm / n if n else 0.0
        if per_channel:
            for c in range(C):
                per_channel[c]["zero_norm"] = int(sums.l0[c])
    if options.wants("mse") or options.wants("rmse") or options.wants("psnr"):
        mse = float(np.sum(sums.sse)) / N if N else 0.0
        r.mse = mse
        r.rmse = math.sqrt(mse)
        r.psnr = _psnr(mse, data_range)
        if per_channel:
            for c in range(C):
                per_channel[c]["mse"] = float(sums.sse[c]) / n
    if options.wants("max_abs"):
        r.max_abs = float(np.max(sums.max_abs))
        if per_channel:
            for c in range(C):
                per_channel[c]["max_abs"] = float(sums.max_abs[c])
    if options.wants("ncc"):
        r.ncc = _ncc(
            N, np.sum(sums.sa), np.sum(sums.sb), np.sum(sums.saa), np.sum(sums.sbb), np.sum(sums.sab)
        )
        if per_channel:
            for c in range(C):
                per_channel[c]["ncc"] = _ncc(
                    n, sums.sa[c], sums.sb[c], sums.saa[c], sums.sbb[c], sums.sab[c]
                )
    if options.wants("histogram") and sums.hist_a is not None:
        each = [histogram_distances(sums.hist_a[c], sums.hist_b[c]) for c in range(C)]
        r.histogram = {k: float(np.mean([e[k] for e in each])) for k in HISTOGRAM_DISTANCES}
        if per_channel:
            for c in range(C):
                per_channel[c]["histogram"] = each[c]
    r.channels = per_channel
    return r


def _psnr(mse: float, data_range: float) -> float:
    if mse == 0:
        return math.inf
    return 10.0 * math.log10(float(data_range) ** 2 / mse)


def _ncc(n, sa, sb, saa, sbb, sab) -> float:
    if n == 0:
        return 0.0
    n = float(n)
    var_a = float(saa) - float(sa) * float(sa) / n
    var_b = float(sbb) - float(sb) * float(sb) / n
    cov = float(sab) - float(sa) * float(sb) / n
    # Relative guard: sums of squares carry rounding of order eps * saa.
    tiny_a = var_a <= 1e-13 * max(abs(float(saa)), 1e-300)
    tiny_b = var_b <= 1e-13 * max(abs(float(sbb)), 1e-300)
    if tiny_a and tiny_b:
        return 1.0
    if tiny_a or tiny_b:
        return 0.0
    return float(np.clip(cov / math.sqrt(var_a * var_b), -1.0, 1.0))
