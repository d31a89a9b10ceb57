"""Sources: opening what the user points at, lazily, validating cheaply first.

- ``_images``: one image file (PNG, JPEG, TIFF page, ...) to an array, refusing bombs before decoding;
  it tells the format by the magic bytes and hands the file to that format's reader (``_read_pillow``,
  ``_read_png``, ``_read_pnm``, ``_read_gif``, ``_read_tiff``), which describes the page in an
  ``ImageInfo`` (``_imageinfo``) from the header; ``_validate`` checks arrays and options,
  ``_readerrors`` words the errors, ``_pillow_limits`` sets Pillow's limits while reads are in flight;
- ``_source``: the :class:`Source` interface and what the kinds share (budgets, fingerprint, sort);
- one module per source kind: ``_folder`` (image folder or glob), ``_tiff`` (TIFF/OME-TIFF stack),
  ``_zarr`` (Zarr/OME-Zarr array), ``_video`` (PyAV), ``_gif``, ``_manifest`` (CSV of pairs);
- ``_open``: :func:`open_source`, which tells the kinds apart and opens the right one;
- ``_remote``: URLs (``s3://``, ``gs://``, ``http(s)://``) through fsspec: storage options, bounded
  timeouts, one-line errors; a URL opens as a Zarr store (zarr's ``FsspecStore``), a folder or glob
  of image objects (each fetched and decoded by the same readers), or a TIFF read by byte range.

The readers know nothing of the maths, the store or the scheduler. The batch readers are imported
on first use of one of their names (PEP 562), so ``import gpudiff`` (every CLI start, every Dask
worker) does not pay for readers it may never need.
"""

from ._images import probe_image, read_image
from ._validate import validate_array

#: names this face loads on first use, and the module that defines each
_LAZY = {"open_source": "_open", "SOURCE_KINDS": "_open", "Source": "_source", "natural_key": "_source"}

__all__ = ["read_image", "probe_image", "validate_array", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module  # noqa: PLC0415

    return getattr(import_module(f".{module}", __name__), name)
