"""Sources: opening what the user points at, lazily, validating cheaply first.

- ``_images``: one image file (PNG, JPEG, TIFF page, ...) to an array, refusing bombs before decoding;
- ``_sources``: the source kinds (image folder or glob, TIFF/OME-TIFF stack, Zarr array, video,
  GIF, CSV manifest of pairs) behind one :class:`Source` interface, and :func:`open_source`.

The readers know nothing of the maths, the store or the scheduler. ``_sources`` is imported on
first use of one of its names (PEP 562), so ``import gpudiff`` (every CLI start, every Dask
worker) does not pay for the batch readers it may never need.
"""

from ._images import probe_image, read_image, validate_array

#: names this face takes from ``_sources`` when first asked for
_FROM_SOURCES = ("open_source", "Source", "SOURCE_KINDS", "natural_key")

__all__ = ["read_image", "probe_image", "validate_array", *_FROM_SOURCES]


def __getattr__(name: str):
    if name in _FROM_SOURCES:
        from . import _sources  # noqa: PLC0415

        return getattr(_sources, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
