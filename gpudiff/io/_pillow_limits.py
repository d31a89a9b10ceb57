"""Pillow's process-wide limits, set while reads are in flight, and its bomb error made ours."""

from __future__ import annotations

import contextlib
import threading

from ..errors import InputError
from ._imageinfo import ImageInfo
from ._readerrors import _sci


_PIL_LOCK = threading.Lock()
_PIL_BUDGETS: list[int] = []
_PIL_SAVED: tuple | None = None


@contextlib.contextmanager
def _pillow_guard(max_pixels: int):
    """Pillow refuses nothing our budget allows, and never fills truncated files with grey.

    Pillow keeps these settings in module globals; they are set on entry of the first read in
    flight (MAX_IMAGE_PIXELS to the largest budget in flight: Pillow raises above twice that),
    and the saved values come back when the last read in flight exits.
    """
    global _PIL_SAVED
    from PIL import Image, ImageFile  # noqa: PLC0415

    with _PIL_LOCK:
        if not _PIL_BUDGETS:
            _PIL_SAVED = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
        _PIL_BUDGETS.append(max_pixels)
        Image.MAX_IMAGE_PIXELS = max(_PIL_BUDGETS)
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        with _PIL_LOCK:
            _PIL_BUDGETS.remove(max_pixels)
            if _PIL_BUDGETS:
                Image.MAX_IMAGE_PIXELS = max(_PIL_BUDGETS)
            else:
                Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = _PIL_SAVED
                _PIL_SAVED = None


def _raise_pillow_bomb(exc, info: ImageInfo, max_pixels: int) -> None:
    try:
        from PIL import Image  # noqa: PLC0415
    except ImportError:  # pragma: no cover
        return
    if isinstance(exc, Image.DecompressionBombError):
        raise InputError(
            f"{info.path} declares more than {_sci(max_pixels)} pixels in one of its frames "
            f"(over the budget): raise --max-pixels if you trust it"
        ) from None
