"""Result stores in the engine's tests: a real source to run on, the same command as a child
process, and store-against-store equality."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def calcium_stack(tmp_path, data_dir, n=300) -> Path:
    """The first n pages of the real calcium-imaging time-lapse (uint16 30x40) as a TIFF stack."""
    import tifffile

    with tifffile.TiffFile(data_dir / "imageio-standard/calcium_imaging.tif") as t:
        frames = np.stack([t.pages[i].asarray() for i in range(n)])
    p = tmp_path / "calcium.tif"
    tifffile.imwrite(p, frames, photometric="minisblack")
    return p


def store_arrays(path, *, maps=False, **open_kw) -> dict:
    """Every per-item array of the store at ``path`` (and its ``maps/`` with ``maps=True``)."""
    from gpudiff.engine._store import ResultStore

    s = ResultStore.open(str(path), **open_kw)
    return s.read(s.names if maps else None)


def assert_same_store(a, b, *, maps=False, open_b=None) -> None:
    """The stores at ``a`` and ``b`` hold the same arrays, value for value (NaN == NaN)."""
    da, db = store_arrays(a, maps=maps), store_arrays(b, maps=maps, **(open_b or {}))
    assert sorted(da) == sorted(db)
    for k in da:
        va, vb = np.asarray(da[k]), np.asarray(db[k])
        if va.dtype.kind == "f":
            np.testing.assert_array_equal(va, vb, err_msg=k)  # NaN == NaN here
        else:
            assert va.tolist() == vb.tolist(), k


def cli(*args, env=None) -> subprocess.Popen:
    """``python -m gpudiff ARGS`` started from the checkout (text pipes for stdout and stderr)."""
    return subprocess.Popen([sys.executable, "-m", "gpudiff", *map(str, args)], cwd=ROOT,
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
