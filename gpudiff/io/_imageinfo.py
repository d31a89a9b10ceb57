"""What a file's header says about one page (:class:`ImageInfo`), and the per-format reader interface.

Each format's reader (``_read_pillow``, ``_read_png``, ``_read_pnm``, ``_read_gif``, ``_read_tiff``)
is a :class:`_Source`: made from the opened file, it fills ``info`` from the header alone, and
``read()`` decodes the pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ImageInfo", "FORMATS"]

#: The formats read, as named in :attr:`ImageInfo.format` ('OME-TIFF' is reported for OME-TIFF).
FORMATS = ("PNG", "JPEG", "BMP", "PNM", "TIFF", "GIF")


@dataclass(frozen=True)
class ImageInfo:
    """What a file's header says about one of its pages, without decoding pixels.

    Attributes
    ----------
    path : str
        The file.
    format : str
        'PNG', 'JPEG', 'BMP', 'PNM', 'TIFF', 'OME-TIFF' or 'GIF' (from the magic bytes).
    shape : tuple of int
        Shape of the array :func:`read_image` returns for this page: ``(H, W)`` or ``(H, W, 3)``.
    dtype : numpy.dtype
        dtype of that array (uint8, uint16, float32 or float64).
    pages : int
        Number of pages (TIFF) or frames (GIF, animated PNG) in the file; 1 for the others.
    """

    path: str
    format: str
    shape: tuple
    dtype: np.dtype
    pages: int

    @property
    def pixels(self) -> int:
        """Height x width declared for the page: what the pixel budget is checked against."""
        return int(self.shape[0]) * int(self.shape[1])


class _Source:
    """One page of an opened file: ``info`` (from the header) and ``read()`` (decodes)."""

    info: ImageInfo

    def read(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError
