"""Sources: opening what the user points at, lazily, validating cheaply first.

- ``_images``: one image file (PNG, JPEG, TIFF page, ...) to an array, refusing bombs before decoding;
- ``_sources``: the source kinds (image folder or glob, TIFF/OME-TIFF stack, Zarr array, video,
  GIF, CSV manifest of pairs) behind one :class:`Source` interface, and :func:`open_source`.

The readers know nothing of the maths, the store or the scheduler.
"""

from ._images import probe_image, read_image, validate_array
from ._sources import SOURCE_KINDS, Source, natural_key, open_source

__all__ = ["read_image", "probe_image", "validate_array", "open_source", "Source", "SOURCE_KINDS", "natural_key"]
