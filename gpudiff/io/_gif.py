"""An animated GIF (Pillow): frames composited as browsers show them."""

from __future__ import annotations

import contextlib

import numpy as np

from ..errors import InputError
from ._images import probe_image
from ._pillow_limits import _pillow_guard
from ._readerrors import _first_line
from ._source import (
    Source,
    _check_budget,
    _check_frame_budget,
    _files_fingerprint,
    _frame_channels,
    _single_image,
    _stat_entry,
)
from ._validate import validate_array


# --------------------------------------------------------------------------------------------
# animated GIF (Pillow)


class GifSource(Source):
    """Frames of an animated GIF, composited by Pillow; one image kept open and seeked forward."""

    kind = "gif"
    _TRANSIENT = ("_lock", "_im", "_fh")

    def __init__(self, path: str, *, max_pixels: int, page_budget=None):
        super().__init__(path, max_pixels=max_pixels)
        self.path = path
        first = probe_image(path)
        self._n = int(first.pages)
        if self._n == 1:
            raise _single_image(path)
        _check_frame_budget(path, self._n, page_budget)
        last = probe_image(path, page=self._n - 1)  # the canvas grows to hold every frame
        # the pixel budget, then the memory a frame's decode needs (each frame is decoded on the canvas)
        _check_budget(path, last.shape[0], last.shape[1], max_pixels,
                      channels=_frame_channels(last.shape), dtype=last.dtype)
        self._shape = tuple(first.shape)
        self._dtype = first.dtype

    def _length(self):
        return self._n

    @property
    def frame_shape(self):
        return self._shape

    @property
    def dtype(self):
        return self._dtype

    def _label(self, i):
        return f"{self.path}[frame {i}]"

    def _close(self):
        with self._lock:
            self._close_image()

    def _close_image(self):
        if self._im is not None:
            with contextlib.suppress(Exception):
                self._im.close()
            self._im = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _read(self, i):
        from PIL import GifImagePlugin  # noqa: PLC0415

        label = self._label(i)
        with self._lock, _pillow_guard(self.max_pixels):
            try:
                if self._im is None:
                    self._fh = open(self.path, "rb")  # noqa: SIM115 - closed by close()
                    self._im = GifImagePlugin.GifImageFile(self._fh)
                im = self._im
                im.seek(i)
                im.load()
                frame = np.asarray(im.convert("RGB"))
            except (InputError, MemoryError):
                raise
            except Exception as exc:
                self._close_image()
                raise InputError(
                    f"{label} is truncated or corrupt (GIF: {_first_line(exc)}): re-export or copy the file again"
                ) from None
        return validate_array(frame, name=label)

    def fingerprint(self):
        return {"kind": self.kind, "spec": self.spec, **_files_fingerprint([_stat_entry(self.path)])}
