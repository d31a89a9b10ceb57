"""Time-lapse keep/drop: keep a frame only when something changed since the last kept frame.

Each frame is compared with the **last kept frame** (not merely the previous one), so a slow drift
adds up until it counts, as ffmpeg's ``mpdecimate`` does; the first frame is kept. A frame that is
an exact repeat of any earlier kept frame (a camera resending an old picture, a looping animation)
is dropped too. Three rules decide "changed":

``pixels`` (default)
    The fraction of pixels whose absolute difference exceeds a noise level is above
    ``min_changed`` (the Motion daemon's ``noise_level`` and ``threshold``, as a fraction). With
    ``noise='auto'`` the level is ``k`` standard deviations of the difference of two noisy copies,
    :math:`k \\sqrt{2}\\,\\hat\\sigma`, where :math:`\\hat\\sigma` is the sensor noise estimated on
    the reference frame (:func:`estimate_noise`): the rule then has no units to tune, from 8-bit
    webcams to 16-bit microscopes using a hundred grey levels.
``blocks``
    ``mpdecimate``'s: the sum of absolute differences over each 8x8 block, in 8-bit units; changed
    when a block exceeds ``hi`` or more than ``frac`` of the blocks exceed ``lo``.
``metric``
    Any metric of :func:`gpudiff.compare` against a threshold (similarities such as ``ssim`` count as
    changed below it, distances above it).

Global light changes (clouds, sun, auto exposure) are the usual false alarm; ``light`` compares
after matching the moving frame's exposure to the reference (``gain``: mean and standard deviation,
undoes a linear exposure change; ``histogram``: the whole histogram, undoes any monotonic tone
curve such as a gamma) or on Sobel edge magnitudes scaled by their frame mean (``edges``: undoes an
offset, a gain and smooth shading, not a curve). Clipped (saturated) pixels are information lost,
and count as changed under every mode.

:class:`Deduplicator` is the sequential definition (and what ``gpudiff watch`` runs, one frame at a
time); :func:`gpudiff.engine.dedup` computes the same decisions on an archive in parallel, on Dask.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from dataclasses import dataclass, field

import numpy as np

from .. import backend as _backend
from ..errors import ConfigError, GpudiffError, InputError

__all__ = [
    "DedupOptions",
    "ChangeScore",
    "Decision",
    "DedupResult",
    "Deduplicator",
    "estimate_noise",
    "change_score",
    "frame_checksum",
    "RULES",
    "LIGHT_MODES",
]

RULES = ("pixels", "blocks", "metric")
LIGHT_MODES = ("none", "gain", "histogram", "edges")
#: Metrics where a higher value means more alike: "changed" is below the threshold.
_SIMILARITIES = {"ssim", "ncc", "psnr", "hist_intersection", "hist_correlation"}
#: MAD of a standard normal: sigma = median(|x|) / 0.6745.
_MAD_NORMAL = 0.6744897501960817


@dataclass(frozen=True)
class DedupOptions:
    """How a frame is judged changed against the last kept frame.

    Parameters
    ----------
    rule : {'pixels', 'blocks', 'metric'}
        See the module notes.
    noise : 'auto' or float
        ``pixels``: a pixel changed when :math:`|a - b|` exceeds this level in the image's units, or
        ``k`` noise deviations with 'auto'.
    k : float
        ``noise='auto'``: the level in standard deviations of the difference of two noisy copies.
    min_changed : float
        ``pixels``: the frame changed when more than this fraction of its pixels changed.
    block, hi, lo, frac : int, float, float, float
        ``blocks``: block size, and ``mpdecimate``'s thresholds in 8-bit grey levels summed over an
        8x8 block (scaled to the block's area; 16-bit and float images are scaled to 8 bits).
    metric, threshold : str, float
        ``metric``: a metric name of :func:`gpudiff.compare` (``ssim``, ``mse``, ``hist_kl``...) and
        its threshold (required).
    light : {'none', 'gain', 'histogram', 'edges'}
        Exposure compensation before comparing (see the module notes).
    align, upsample : bool, int
        Register the moving frame to the reference first (phase correlation to 1/``upsample``
        pixel) and compare over the overlap: a camera that shakes or drifts is not a change.
    blur : float
        Gaussian sigma (pixels) applied to both frames first; 0 for none.
    drop_repeats : bool
        Also drop a frame identical (bit for bit) to any earlier kept frame.
    backend : {'auto', 'numpy', 'cupy', 'emulated-gpu'}
        'emulated-gpu': the CuPy code path on the CPU (a CUDA emulator), to check a GPU job on a
        machine without a GPU; slow.
    """

    rule: str = "pixels"
    noise: object = "auto"
    k: float = 4.0
    min_changed: float = 0.001
    block: int = 8
    hi: float = 768.0
    lo: float = 320.0
    frac: float = 0.33
    metric: str | None = None
    threshold: float | None = None
    light: str = "none"
    align: bool = False
    upsample: int = 10
    blur: float = 0.0
    drop_repeats: bool = True
    backend: str = "auto"

    def __post_init__(self):
        if self.rule not in RULES:
            raise ConfigError(f"--rule {self.rule!r}: use one of {', '.join(RULES)}")
        if self.light not in LIGHT_MODES:
            raise ConfigError(f"--light {self.light!r}: use one of {', '.join(LIGHT_MODES)}")
        if self.noise != "auto":
            try:
                v = float(self.noise)
            except (TypeError, ValueError):
                raise ConfigError(f"--noise {self.noise!r}: give 'auto' or a level >= 0 in grey levels") from None
            if not math.isfinite(v) or v < 0:
                raise ConfigError(f"--noise {self.noise!r}: give 'auto' or a level >= 0 in grey levels")
            object.__setattr__(self, "noise", v)
        for name in ("k", "hi", "lo"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ConfigError(f"--{name.replace('_', '-')} {v!r} must be a number > 0")
        for name in ("min_changed", "frac"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 <= v < 1):
                raise ConfigError(f"--{name.replace('_', '-')} {v!r} must be a fraction in [0, 1)")
        if not (isinstance(self.block, int) and self.block >= 1):
            raise ConfigError(f"--block {self.block!r} must be a whole number >= 1")
        if not (isinstance(self.upsample, int) and self.upsample >= 1):
            raise ConfigError(f"--upsample {self.upsample!r} must be a whole number >= 1")
        if not (isinstance(self.blur, (int, float)) and math.isfinite(self.blur) and self.blur >= 0):
            raise ConfigError(f"--blur {self.blur!r} must be >= 0")
        if self.rule == "metric":
            from ..options import ALL_METRICS  # noqa: PLC0415

            names = set(ALL_METRICS) | {"manhattan_per_pixel", "zero_norm_per_pixel"}
            names |= {f"hist_{d}" for d in ("kl", "js", "chi2", "chi2_alt", "bhattacharyya", "intersection",
                                            "correlation")}
            if self.metric not in names - {"histogram"}:
                raise ConfigError(
                    f"--rule metric needs --metric, one of {', '.join(sorted(names - {'histogram'}))}"
                )
            if self.threshold is None or not math.isfinite(float(self.threshold)):
                raise ConfigError(f"--rule metric needs --threshold for {self.metric}")

    def replace(self, **changes) -> DedupOptions:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """The rule in a few words, for reports."""
        if self.rule == "pixels":
            level = f"{self.k:g} sigma of noise" if self.noise == "auto" else f"{self.noise:g} grey levels"
            out = f"changed pixels (|diff| > {level}) > {100 * self.min_changed:g}% of the frame"
        elif self.rule == "blocks":
            out = f"{self.block}x{self.block} blocks: any SAD > {self.hi:g} or > {100 * self.frac:g}% over {self.lo:g}"
        else:
            op = "<" if self.metric in _SIMILARITIES else ">"
            out = f"{self.metric} {op} {self.threshold:g}"
        if self.light != "none":
            out += f", light={self.light}"
        if self.align:
            out += ", aligned"
        return out


@dataclass
class ChangeScore:
    """Whether ``moving`` changed against ``reference``, and the numbers behind it.

    ``statistic`` is compared with ``threshold``: for ``pixels`` the changed fraction against
    ``min_changed``; for ``blocks`` the larger of max-block/hi and fraction-over-lo/frac against 1;
    for ``metric`` the metric against its threshold. ``level`` is the per-pixel noise level used
    (``pixels``), in the compared image's units.
    """

    changed: bool
    statistic: float
    threshold: float
    level: float = math.nan


@dataclass
class Decision:
    """The fate of one frame."""

    index: int
    keep: bool
    reference: int  # the kept frame it was compared with (-1 for the first)
    statistic: float = math.nan
    threshold: float = math.nan
    level: float = math.nan
    repeat_of: int = -1
    checksum: int = 0
    reason: str = ""
    failed: bool = False


@dataclass
class DedupResult:
    """Per-frame decisions of :func:`dedup`, as arrays (frame order)."""

    keep: np.ndarray
    reference: np.ndarray
    statistic: np.ndarray
    threshold: np.ndarray
    level: np.ndarray
    repeat_of: np.ndarray
    checksum: np.ndarray
    failed: np.ndarray
    reason: list = field(default_factory=list)

    @classmethod
    def from_decisions(cls, decisions) -> DedupResult:
        d = list(decisions)
        return cls(
            keep=np.array([x.keep for x in d], dtype=bool),
            reference=np.array([x.reference for x in d], dtype=np.int64),
            statistic=np.array([x.statistic for x in d], dtype=np.float64),
            threshold=np.array([x.threshold for x in d], dtype=np.float64),
            level=np.array([x.level for x in d], dtype=np.float64),
            repeat_of=np.array([x.repeat_of for x in d], dtype=np.int64),
            checksum=np.array([x.checksum for x in d], dtype=np.int64),
            failed=np.array([x.failed for x in d], dtype=bool),
            reason=[x.reason for x in d],
        )

    @property
    def kept(self) -> np.ndarray:
        """Indices of the kept frames."""
        return np.flatnonzero(self.keep)


# --------------------------------------------------------------------------------------------------
# measurements


def estimate_noise(image) -> float:
    """Standard deviation of additive white noise in ``image`` (grey, or the mean of the channels).

    Notes
    -----
    Donoho's wavelet estimator on the finest diagonal Haar detail: over 2x2 blocks
    :math:`\\begin{smallmatrix} a & b \\\\ c & d \\end{smallmatrix}`, :math:`h = (a - b - c + d)/2`
    has variance :math:`\\sigma^2` for i.i.d. noise and is nearly blind to smooth content and to
    horizontal or vertical edges; :math:`\\hat\\sigma = \\mathrm{median}|h| / 0.6745` (Donoho and
    Johnstone, "Ideal spatial adaptation by wavelet shrinkage", Biometrika 1994). scikit-image's
    ``restoration.estimate_sigma`` applies the same estimator to a Daubechies-2 detail band.
    """
    from ..pair._preprocess import to_gray  # noqa: PLC0415

    xp = _backend.get_namespace(image)
    g = to_gray(image).astype(xp.float32, copy=False)
    H, W = (int(g.shape[0]) // 2) * 2, (int(g.shape[1]) // 2) * 2
    if H == 0 or W == 0:
        return 0.0
    g = g[:H, :W]
    h = (g[0::2, 0::2] - g[0::2, 1::2] - g[1::2, 0::2] + g[1::2, 1::2]) * xp.float32(0.5)
    return float(xp.median(xp.abs(h))) / _MAD_NORMAL  # sync


def frame_checksum(frame) -> int:
    """Adler-32 of the frame's bytes, shape and dtype: equal frames have equal checksums (a match
    is confirmed by comparing the frames, so a collision cannot drop a frame)."""
    a = np.ascontiguousarray(_backend.to_host(frame))
    head = f"{a.shape}{a.dtype.str}".encode()
    return int(zlib.adler32(memoryview(a).cast("B"), zlib.adler32(head)))


_EDGE_NOISE_GAIN: dict = {}


def _edge_noise_gain(xp) -> float:
    """Std of the difference of Sobel magnitudes of two independent unit-noise images (measured
    once on a fixed 256x256 draw), to express the noise level in edge units."""
    key = _backend.backend_name(xp)
    if key not in _EDGE_NOISE_GAIN:
        from ..pair._preprocess import edge_magnitude  # noqa: PLC0415

        rng = np.random.default_rng(0)
        n1 = xp.asarray(rng.standard_normal((256, 256)).astype(np.float32))
        n2 = xp.asarray(rng.standard_normal((256, 256)).astype(np.float32))
        d = edge_magnitude(n1, method="sobel") - edge_magnitude(n2, method="sobel")
        _EDGE_NOISE_GAIN[key] = float(xp.std(d[2:-2, 2:-2], dtype=xp.float64))  # sync
    return _EDGE_NOISE_GAIN[key]


def _eight_bit_scale(dtype) -> float:
    dtype = np.dtype(dtype)
    if dtype.kind == "u":
        return 255.0 / float(np.iinfo(dtype).max)
    return 255.0  # float images are in [0, 1]


def _prepare(reference, moving, options: DedupOptions, xp):
    """Grey float32 pair after blur and light compensation; the unit factor for the noise level."""
    from ..pair._preprocess import edge_magnitude, gaussian_blur, match_histograms, to_gray  # noqa: PLC0415

    if reference.shape[:2] != moving.shape[:2]:
        raise InputError(
            f"frame of shape {tuple(moving.shape)} after frames of shape {tuple(reference.shape)}: "
            "a time-lapse needs one frame size (crop or resize the odd frames)"
        )
    a = to_gray(reference).astype(xp.float32, copy=False)
    b = to_gray(moving).astype(xp.float32, copy=False)
    if options.align:
        # a shaking or drifting camera: compare over the registered overlap only
        from ..pair._align import alignment_problem, phase_cross_correlation  # noqa: PLC0415
        from ..pair._overlap import register_overlap  # noqa: PLC0415

        est = phase_cross_correlation(a, b, upsample_factor=options.upsample)
        # a shift phase correlation cannot vouch for (a new scene, a light change) is not applied
        shift = est.shift if alignment_problem(est, a.shape) is None else (0.0, 0.0)
        a, b = register_overlap(a, b, shift)
        a = a.astype(xp.float32, copy=False)
        b = b.astype(xp.float32, copy=False)
    if options.blur > 0:
        a = gaussian_blur(a, sigma=options.blur)
        b = gaussian_blur(b, sigma=options.blur)
    gain = 1.0
    if options.light == "gain":
        ma, sa = xp.mean(a, dtype=xp.float64), xp.std(a, dtype=xp.float64)
        mb, sb = xp.mean(b, dtype=xp.float64), xp.std(b, dtype=xp.float64)
        g = xp.where(sb > 0, sa / xp.where(sb > 0, sb, 1.0), 1.0)
        b = ((b - mb.astype(xp.float32)) * g.astype(xp.float32) + ma.astype(xp.float32)).astype(xp.float32)
    elif options.light == "histogram":
        b = match_histograms(b, a)
    elif options.light == "edges":
        # Sobel magnitudes, each divided by its frame's mean magnitude: an exposure gain scales
        # every gradient alike, an offset or a smooth shading barely moves them.
        a = edge_magnitude(a, method="sobel")
        b = edge_magnitude(b, method="sobel")
        ea = xp.mean(a, dtype=xp.float64)
        eb = xp.mean(b, dtype=xp.float64)
        a = a * xp.where(ea > 0, 1.0 / xp.where(ea > 0, ea, 1.0), 0.0).astype(xp.float32)
        b = b * xp.where(eb > 0, 1.0 / xp.where(eb > 0, eb, 1.0), 0.0).astype(xp.float32)
        mean_a = float(ea)  # sync
        gain = _edge_noise_gain(xp) / mean_a if mean_a > 0 else 0.0
    return a, b, gain


def change_score(reference, moving, *, options: DedupOptions | None = None, noise: float | None = None) -> ChangeScore:
    """Has ``moving`` changed against ``reference``?

    Parameters
    ----------
    reference, moving : ndarray, shape (H, W) or (H, W, C)
        NumPy or CuPy frames of one dtype (uint8, uint16 or float in [0, 1]).
    options : DedupOptions, optional
    noise : float, optional
        The reference's noise standard deviation, when already estimated (see
        :func:`estimate_noise`); ``noise='auto'`` estimates it otherwise.

    Returns
    -------
    ChangeScore
    """
    options = options or DedupOptions()
    if options.rule == "metric":
        return _metric_score(reference, moving, options)
    xp = _backend.get_namespace(reference, moving)
    a, b, gain = _prepare(reference, moving, options, xp)
    d = xp.abs(a - b)
    if options.rule == "pixels":
        if options.noise == "auto":
            sigma = estimate_noise(reference) if noise is None else float(noise)
            if np.dtype(reference.dtype).kind == "u":
                # integer frames also carry rounding noise (variance 1/12 of a level), which is all
                # there is in a clean synthetic frame and what an exposure change leaves behind
                sigma = math.sqrt(sigma * sigma + 1.0 / 12.0)
            level = options.k * math.sqrt(2.0) * sigma * gain
        else:
            level = float(options.noise) * gain
        frac = float(xp.count_nonzero(d > xp.float32(level))) / float(d.size)  # sync
        return ChangeScore(frac > options.min_changed, frac, float(options.min_changed), level)
    # blocks
    s = options.block
    scale = _eight_bit_scale(reference.dtype) if options.light != "edges" else 255.0 / 8.0
    H, W = int(d.shape[0]), int(d.shape[1])
    hb, wb = max(H // s, 1), max(W // s, 1)
    if H >= s and W >= s:
        sad = d[: hb * s, : wb * s].reshape(hb, s, wb, s).sum(axis=(1, 3), dtype=xp.float64)
        area = s * s
    else:
        sad = d.sum(dtype=xp.float64).reshape(1, 1)
        area = H * W
    sad = sad * (scale * 64.0 / area)  # 8-bit levels summed over an 8x8 block
    mx = float(sad.max())  # sync
    over = float(xp.count_nonzero(sad > options.lo)) / float(sad.size)  # sync
    stat = max(mx / options.hi, over / options.frac if options.frac > 0 else (math.inf if over > 0 else 0.0))
    return ChangeScore(stat > 1.0, stat, 1.0)


def _metric_score(reference, moving, options: DedupOptions) -> ChangeScore:
    from ..pair._compare import compare  # noqa: PLC0415
    from ..options import CompareOptions  # noqa: PLC0415

    m = options.metric
    base = m[5:] if m.startswith("hist_") else m.replace("_per_pixel", "")
    metric = "histogram" if m.startswith("hist_") else base
    kw = {"metrics": (metric,), "backend": options.backend, "blur": options.blur}
    if options.align:
        kw.update(align=True, upsample=options.upsample)
    if options.light == "gain":
        kw["normalize"] = "zscore"
    elif options.light == "histogram":
        kw["normalize"] = "histogram"
    elif options.light == "edges":
        kw["edges"] = "sobel"
    r = compare(reference, moving, options=CompareOptions(**kw))
    if m.startswith("hist_"):
        v = (r.histogram or {}).get(m[5:])
    else:
        v = getattr(r, m)
    v = math.nan if v is None else float(v)
    thr = float(options.threshold)
    changed = v < thr if m in _SIMILARITIES else v > thr
    return ChangeScore(bool(changed), v, thr)


def _identical_score(options: DedupOptions) -> ChangeScore:
    """The score of a frame identical to its reference, without computing it (pixel and block
    rules give 0 for identical frames whatever the noise level)."""
    thr = float(options.min_changed) if options.rule == "pixels" else 1.0
    return ChangeScore(False, 0.0, thr)


def _same_frame(a, b) -> bool:
    a = np.asarray(_backend.to_host(a))
    b = np.asarray(_backend.to_host(b))
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


# --------------------------------------------------------------------------------------------------
# the sequential definition


class Deduplicator:
    """Decide frame after frame (the definition :func:`dedup` reproduces in parallel).

    Parameters
    ----------
    options : DedupOptions, optional
    load : callable, optional
        ``load(index) -> frame``, used only to confirm a checksum match against an earlier kept
        frame (pass the source's ``read``); without it a match is confirmed by checksum alone.

    Notes
    -----
    State: the last kept frame (index, pixels on the device, its noise), and the checksums of every
    kept frame. :meth:`state` / :meth:`restore` carry it across restarts (``gpudiff watch``).
    """

    def __init__(self, options: DedupOptions | None = None, *, load=None):
        self.options = options or DedupOptions()
        self._load = load
        self.xp = _backend.resolve_backend(self.options.backend)
        self.last_index = -1
        self._last = None
        self._last_noise = None
        self._last_checksum = None
        self.kept_checksums: dict[int, list[int]] = {}

    def state(self) -> dict:
        """JSON-able state (without pixels): last kept index and the kept checksums."""
        return {"last_index": self.last_index, "kept_checksums": {str(k): v for k, v in self.kept_checksums.items()}}

    def restore(self, state: dict, last_frame=None) -> None:
        """Continue from :meth:`state` (and the last kept frame's pixels)."""
        self.last_index = int(state.get("last_index", -1))
        self.kept_checksums = {int(k): [int(i) for i in v] for k, v in state.get("kept_checksums", {}).items()}
        self._last = None if last_frame is None else _backend.to_device(last_frame, self.xp)
        self._last_noise = None
        self._last_checksum = None if last_frame is None else frame_checksum(last_frame)

    def _repeat_of(self, frame, checksum: int) -> int:
        for j in self.kept_checksums.get(checksum, []):
            if self._load is None:
                return j
            try:
                earlier = self._load(j)
            except GpudiffError:
                continue
            if np.array_equal(np.asarray(earlier), np.asarray(_backend.to_host(frame))):
                return j
        return -1

    def decide(self, index: int, frame, *, score: ChangeScore | None = None, checksum: int | None = None) -> Decision:
        """The decision for frame ``index`` (frames must come in increasing order).

        ``score`` (against the last kept frame) and ``checksum`` may be given when computed elsewhere
        (the parallel driver); they are computed here otherwise.
        """
        checksum = frame_checksum(frame) if checksum is None else int(checksum)
        if self.last_index < 0 or (self._last is None and score is None):
            if self.last_index < 0:
                first = Decision(index, True, -1, checksum=checksum, reason="first frame")
                return self._keep(index, frame, checksum, first)
            if self._load is None:
                raise InputError("the last kept frame's pixels are missing: restore() it with last_frame")
            host = self._load(self.last_index)
            self._last = _backend.to_device(host, self.xp)
            self._last_checksum = frame_checksum(host)
        if score is None and self.options.rule != "metric" and checksum == self._last_checksum:
            if _same_frame(self._last, frame):  # an exact repeat: nothing to measure
                score = _identical_score(self.options)
        if score is None:
            if self._last_noise is None and self.options.rule == "pixels" and self.options.noise == "auto":
                self._last_noise = estimate_noise(self._last)
            score = change_score(self._last, _backend.to_device(frame, self.xp), options=self.options,
                                 noise=self._last_noise)
        d = Decision(index, score.changed, self.last_index, score.statistic, score.threshold, score.level,
                     checksum=checksum)
        if not score.changed:
            d.reason = f"no change since frame {self.last_index}"
            return d
        if self.options.drop_repeats:
            j = self._repeat_of(frame, checksum)
            if j >= 0:
                d.keep = False
                d.repeat_of = j
                d.reason = f"repeat of kept frame {j}"
                return d
        d.reason = f"changed since frame {self.last_index}"
        return self._keep(index, frame, checksum, d)

    def _keep(self, index, frame, checksum, d: Decision) -> Decision:
        self.last_index = index
        self._last = _backend.to_device(frame, self.xp) if frame is not None else None
        self._last_noise = None
        self._last_checksum = checksum
        self.kept_checksums.setdefault(checksum, []).append(index)
        return d

    def fail(self, index: int, message: str) -> Decision:
        """A frame that could not be read: not kept, the state unchanged."""
        return Decision(index, False, self.last_index, reason=message, failed=True)
