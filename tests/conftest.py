"""Shared fixtures: the backends to run each test body on, and the real data beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from gpudiff._backend import cupy_available

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if "GPUDIFF_DATA" in os.environ:
    DATA = Path(os.environ["GPUDIFF_DATA"])


def _backends():
    out = [pytest.param("numpy", id="numpy")]
    out.append(pytest.param("cupy", id="cupy", marks=pytest.mark.gpu))
    return out


@pytest.fixture(params=_backends())
def xp(request):
    """numpy, or cupy where a device is (the cupy case skips elsewhere)."""
    if request.param == "numpy":
        return np
    if not cupy_available():
        pytest.skip("no CUDA device / CuPy")
    import cupy

    return cupy


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real-image folder; skips where absent, fails in CI (GPUDIFF_REQUIRE_DATA=1)."""
    if not DATA.is_dir():
        if os.environ.get("GPUDIFF_REQUIRE_DATA") == "1":
            pytest.fail(f"real test data missing at {DATA} (GPUDIFF_REQUIRE_DATA=1)")
        pytest.skip(f"real test data not found at {DATA}")
    return DATA


def pytest_collection_modifyitems(config, items):
    if cupy_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device and CuPy")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# CI runs hypothesis derandomized (the same examples every run), so a landing never hangs on a
# random draw; locally each run explores new examples.
try:
    from hypothesis import settings as _hsettings

    _hsettings.register_profile("ci", derandomize=True, print_blob=True)
    if os.environ.get("CI"):
        _hsettings.load_profile("ci")
except ImportError:  # pragma: no cover
    pass
