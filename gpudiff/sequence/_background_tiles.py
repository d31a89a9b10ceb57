"""The tiles of :mod:`._background`: the regions of a frame that the models of a tiled run cover,
each with the halo its cleaned mask needs (:func:`plan_tiles`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError, InputError
from ._background_options import _is_whole

__all__ = ["Tile", "plan_tiles"]


@dataclass(frozen=True)
class Tile:
    """A region of the frame a model covers.

    ``core`` = ``(y0, y1, x0, x1)`` is the part whose mask the tile reports; ``outer`` is the core
    grown by the halo (clipped to the frame): the model's state covers ``outer``.
    """

    core: tuple[int, int, int, int]
    outer: tuple[int, int, int, int]

    @property
    def core_slices(self) -> tuple[slice, slice]:
        """Where the tile's mask goes in the frame."""
        y0, y1, x0, x1 = self.core
        return slice(y0, y1), slice(x0, x1)

    @property
    def crop(self) -> tuple[slice, slice]:
        """The core inside the outer window."""
        (y0, y1, x0, x1), (oy, _, ox, _) = self.core, self.outer
        return slice(y0 - oy, y1 - oy), slice(x0 - ox, x1 - ox)

    @property
    def outer_shape(self) -> tuple[int, int]:
        y0, y1, x0, x1 = self.outer
        return y1 - y0, x1 - x0


def _whole(frame_shape) -> Tile:
    h, w = frame_shape[:2]
    return Tile((0, h, 0, w), (0, h, 0, w))


def plan_tiles(frame_shape, tile_shape, *, halo: int = 0) -> list[Tile]:
    """Split a frame into tiles (row-major), each with its halo clipped to the frame.

    Parameters
    ----------
    frame_shape : tuple of int
        ``(H, W)`` or ``(H, W, C)``.
    tile_shape : tuple of int
        ``(th, tw)``, the core size; the last row/column of tiles may be smaller.
    halo : int, optional
        Context on each side, usually ``options.halo``.

    Returns
    -------
    list of Tile
    """
    if len(frame_shape) not in (2, 3) or not all(_is_whole(s) and s >= 1 for s in frame_shape):
        raise InputError(f"frame_shape={tuple(frame_shape)!r} must be (H, W) or (H, W, C) of positive sizes")
    if len(tile_shape) != 2 or not all(_is_whole(s) and s >= 1 for s in tile_shape):
        raise ConfigError(f"tile_shape={tuple(tile_shape)!r} must be two whole numbers >= 1")
    if not (_is_whole(halo) and halo >= 0):
        raise ConfigError(f"halo={halo!r} must be a whole number >= 0")
    h, w = int(frame_shape[0]), int(frame_shape[1])
    th, tw, halo = int(tile_shape[0]), int(tile_shape[1]), int(halo)
    tiles = []
    for y0 in range(0, h, th):
        for x0 in range(0, w, tw):
            y1, x1 = min(y0 + th, h), min(x0 + tw, w)
            outer = (max(y0 - halo, 0), min(y1 + halo, h), max(x0 - halo, 0), min(x1 + halo, w))
            tiles.append(Tile((y0, y1, x0, x1), outer))
    return tiles
