"""Shadows and labels for :mod:`._background`: the cast-shadow test (:func:`shadow_mask`) that a
model applies to the pixels it calls foreground, and the CDnet label values of the label map a
model reports (:data:`LABEL_BACKGROUND`, :data:`LABEL_SHADOW`, :data:`LABEL_UNKNOWN`,
:data:`LABEL_FOREGROUND`). Elementwise float32, so a tile gets the whole frame's bits."""

from __future__ import annotations

__all__ = [
    "LABEL_BACKGROUND",
    "LABEL_SHADOW",
    "LABEL_UNKNOWN",
    "LABEL_FOREGROUND",
    "shadow_mask",
    "channel_sum",
]

# CDnet 2014's ground-truth values (changedetection.net), so a label map scores against it directly
LABEL_BACKGROUND = 0
LABEL_SHADOW = 50
LABEL_UNKNOWN = 170  # not classified: still initialising, or not covered by the aligned frame
LABEL_FOREGROUND = 255


def channel_sum(a):
    """Sum over the last axis of an (h, w, C) array as a chain of adds (fixed order, elementwise)."""
    out = a[..., 0]
    for c in range(1, a.shape[-1]):
        out = out + a[..., c]
    return out


def shadow_mask(x, ref, options, xp):
    """Where ``x`` looks like the background ``ref`` under a shadow.

    Parameters
    ----------
    x, ref : float32 array, (h, w) grey or (h, w, C) colour
        The frame and the model's background (its mean), in the same units.
    options : BackgroundOptions
        ``shadow_ratio`` = (lo, hi) and ``shadow_chroma``.
    xp : module

    Returns
    -------
    bool array (h, w)

    Notes
    -----
    The brightness ratio is the least-squares :math:`a` with :math:`x \\approx a\\,\\mu`,

    .. math:: a = \\frac{\\sum_c x_c \\mu_c}{\\sum_c \\mu_c^2},

    Horprasert et al.'s *brightness distortion* (ICCV FRAME-RATE workshop, 1999), also OpenCV
    MOG2's shadow test. A pixel is shadow when :math:`lo \\le a \\le hi` and its *colour
    distortion* relative to the shaded background is small,

    .. math:: \\sqrt{\\sum_c (x_c - a \\mu_c)^2} \\le \\text{chroma} \\cdot a \\sqrt{\\sum_c \\mu_c^2},

    (the sine of the angle between the colours :math:`x` and :math:`\\mu`; Cucchiara et al.,
    IEEE PAMI 25(10), 2003 bound the same change of hue and saturation in HSV). A grey pixel has
    no colour: only the ratio test applies, :math:`a = x / \\mu`. A background of zero brightness
    casts no shadow.
    """
    f32 = xp.float32
    lo, hi = options.shadow_ratio
    if x.ndim == 2 or x.shape[-1] == 1:
        if x.ndim == 3:
            x, ref = x[..., 0], ref[..., 0]
        dark = ref > f32(0)
        a = x / xp.where(dark, ref, f32(1))
        return dark & (a >= f32(lo)) & (a <= f32(hi))
    mm = channel_sum(ref * ref)
    dark = mm > f32(0)
    a = channel_sum(x * ref) / xp.where(dark, mm, f32(1))
    r = x - a[..., None] * ref
    r2 = channel_sum(r * r)
    c = f32(options.shadow_chroma)
    chroma = r2 <= (c * c) * (a * a) * mm
    return dark & (a >= f32(lo)) & (a <= f32(hi)) & chroma
