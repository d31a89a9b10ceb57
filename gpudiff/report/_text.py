"""Words and numbers shared by the figures, their captions and the page: metric descriptions and
labels, number formatting, HTML escaping.
"""

from __future__ import annotations

import html as _html
import math


# name -> (what it is, unit). Intensity is in the units of the compared images after preprocessing.
_DESCRIPTIONS = {
    "manhattan": ("sum of |reference − moving|", "intensity × pixels"),
    "manhattan_per_pixel": ("mean |reference − moving|", "intensity"),
    "zero_norm": ("pixels that differ", "pixels"),
    "zero_norm_per_pixel": ("fraction of pixels that differ", "fraction"),
    "mse": ("mean squared error", "intensity²"),
    "rmse": ("root mean squared error", "intensity"),
    "psnr": ("peak signal-to-noise ratio", "dB"),
    "max_abs": ("largest |reference − moving|", "intensity"),
    "ncc": ("normalised cross-correlation", "1 = identical"),
    "ssim": ("structural similarity (SSIM)", "1 = identical"),
    "hist_kl": ("histogram Kullback–Leibler divergence", "nats"),
    "hist_js": ("histogram Jensen–Shannon divergence", "nats"),
    "hist_chi2": ("histogram χ² distance", "unitless"),
    "hist_chi2_alt": ("histogram alternative χ² distance", "unitless"),
    "hist_bhattacharyya": ("histogram Bhattacharyya distance", "0 = identical"),
    "hist_intersection": ("histogram intersection", "1 = identical"),
    "hist_correlation": ("histogram correlation", "1 = identical"),
    "confidence": ("alignment confidence", "0–1"),
    "pixels": ("pixels compared", "pixels"),
    "change": ("change since the last kept frame (dedup statistic)", "rule's unit"),
    "kl_prev": ("histogram KL divergence to the previous frame", "nats"),
    "corrupt_score": ("corruption score", "≥ 1: corrupt"),
    "cut_score": ("scene-cut score", "≥ 1: cut"),
    "foreground_fraction": ("foreground fraction", "fraction of pixels"),
    "flow_mean": ("mean optical-flow magnitude", "px"),
    "flow_p95": ("95th percentile optical-flow magnitude", "px"),
    "flow_valid": ("share of pixels the backward flow confirms", "fraction of pixels"),
}


def _label(name: str) -> str:
    what, unit = _DESCRIPTIONS.get(name, (name.replace("_", " "), ""))
    return f"{name}: {what}" + (f" ({unit})" if unit else "")


def _axis_label(name: str) -> str:
    _, unit = _DESCRIPTIONS.get(name, ("", ""))
    return f"{name} ({unit})" if unit else name


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if v == int(v) and abs(v) < 1e15:
        return f"{int(v)}"
    return f"{v:.4g}"


def _esc(s) -> str:
    text = str(s)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a file name's bytes that are not UTF-8 (os.fsdecode's surrogates)
        text = text.encode("utf-8", "surrogateescape" if _fs_bytes(text) else "surrogatepass").decode(
            "utf-8", "backslashreplace")
    return _html.escape(text, quote=True)


def _fs_bytes(text: str) -> bool:
    try:
        text.encode("utf-8", "surrogateescape")
        return True
    except UnicodeEncodeError:
        return False
