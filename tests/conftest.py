"""Shared fixtures: the backends to run each test body on, and the real data beside the checkout.

The "cupy" case of every ``xp``-parametrised test (marker ``gpu``) runs on the real CuPy where a
device is, and on the emulated GPU (``gpudiff.backend._emulated``: the CuPy code path with NumPy memory,
kernels under the CPU CUDA emulator) everywhere else, so CI executes the GPU branches. Tests that
need the real hardware (timing, pinned memory behaviour) carry ``device_only`` and skip without it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from gpudiff.backend import cupy_available

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if "GPUDIFF_DATA" in os.environ:
    DATA = Path(os.environ["GPUDIFF_DATA"])


def _backends():
    out = [pytest.param("numpy", id="numpy")]
    out.append(pytest.param("cupy", id="cupy", marks=pytest.mark.gpu))
    return out


def _device_backend() -> str:
    """The backend name of the GPU code path here: 'cupy' on a device, else 'emulated-gpu'."""
    if os.environ.get("GPUDIFF_TEST_DEVICE") == "emulated":
        return "emulated-gpu"
    return "cupy" if cupy_available() else "emulated-gpu"


@pytest.fixture(params=_backends())
def xp(request):
    """numpy, or the GPU namespace: CuPy on a device, the emulated GPU elsewhere."""
    if request.param == "numpy":
        return np
    from gpudiff.backend import resolve_backend

    return resolve_backend(_device_backend())


@pytest.fixture(scope="session")
def gpu_backend() -> str:
    """The ``--backend`` value of the GPU code path: 'cupy' on a device, 'emulated-gpu' elsewhere."""
    return _device_backend()


@pytest.fixture(scope="session")
def cp(gpu_backend):
    """The GPU namespace (cupy, or gpudiff.backend._emulated) for tests of the GPU path."""
    from gpudiff.backend import resolve_backend

    return resolve_backend(gpu_backend)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real-image folder; skips where absent, fails in CI (GPUDIFF_REQUIRE_DATA=1)."""
    if not DATA.is_dir():
        if os.environ.get("GPUDIFF_REQUIRE_DATA") == "1":
            pytest.fail(f"real test data missing at {DATA} (GPUDIFF_REQUIRE_DATA=1)")
        pytest.skip(f"real test data not found at {DATA}")
    return DATA


@pytest.fixture(scope="session")
def cdnet_traffic(data_dir):
    """CDnet 2014 cameraJitter/traffic frames 950-1050 as RGB arrays, their ground truth (CDnet's
    labels 0/50/85/170/255) and the ROI as a bool mask: ``(frames, gt, inside)``."""
    import cv2

    folder = data_dir / "cdnet2014-traffic-subset"
    frames = [cv2.cvtColor(cv2.imread(str(folder / "input" / f"in{i:06d}.jpg")), cv2.COLOR_BGR2RGB)
              for i in range(950, 1051)]
    gt = np.stack([cv2.imread(str(folder / "groundtruth" / f"gt{i:06d}.png"), cv2.IMREAD_GRAYSCALE)
                   for i in range(950, 1051)])
    roi = cv2.imread(str(folder / "ROI.bmp"), cv2.IMREAD_GRAYSCALE)
    if roi.shape == gt.shape[1:]:
        inside = roi > 0
    else:  # this subset's ROI.bmp has another width; it is usable only when it excludes nothing
        assert (roi == 255).all(), f"ROI.bmp {roi.shape} does not match the frames {gt.shape[1:]}"
        inside = np.ones(gt.shape[1:], dtype=bool)
    return frames, gt, inside


@pytest.fixture(scope="session")
def motorcycle_quarter(data_dir):
    """The Middlebury 2014 Motorcycle stereo pair at 1/4 scale (benchmarks/flow_eval.py's scaling):
    ``(left, right, disparity)``, the grey images (mean of B, G, R in float64) averaged over 4x4
    blocks as float32 in [0, 255] (125x185), and the disparity / 4 (inf where unknown, or where a
    block holds an unknown pixel). Reference = left, moving = right: the true flow is (0, -disparity)."""
    import cv2

    d = data_dir / "skimage-data"

    def blocks(a, s=4):
        h, w = (a.shape[0] // s) * s, (a.shape[1] // s) * s
        return a[:h, :w].reshape(h // s, s, w // s, s).mean(axis=(1, 3))

    grey = [cv2.imread(str(d / f"motorcycle_{side}.png"), cv2.IMREAD_COLOR).astype(np.float64).mean(axis=2)
            for side in ("left", "right")]
    disp = blocks(np.load(d / "motorcycle_disp.npz")["arr_0"].astype(np.float64)) / 4
    return blocks(grey[0]).astype(np.float32), blocks(grey[1]).astype(np.float32), disp


@pytest.fixture
def cdnet_clip(data_dir, tmp_path):
    """``cdnet_clip(n)``: a folder of the first ``n`` real CDnet traffic frames (camera jitter)."""
    import shutil

    def make(n: int) -> Path:
        src = data_dir / "cdnet2014-traffic-subset/input"
        out = tmp_path / f"cdnet-{n}"
        out.mkdir(exist_ok=True)
        for p in sorted(src.iterdir())[:n]:
            shutil.copy2(p, out / p.name)
        return out

    return make


@pytest.fixture
def force_kernel_flavour(monkeypatch):
    """Make pair_sums launch a pair_stats kernel the size rules would not pick, to test every one.

    ``force_kernel_flavour("i64-general-global-hist")``: any of ``i64`` (64-bit index), ``general``
    (the multi-channel kernel for one channel), ``global-hist`` (histograms in global memory, no
    shared memory) in one string. The names follow ``_sums_cuda._cuda_kernel_name``.
    """
    from gpudiff.pair import _sums_cuda

    def force(flavour: str) -> None:
        real = _sums_cuda._cuda_kernel_name

        def patched(dtype, C, n_samples, bins):
            name, shared = real(dtype, C, n_samples, bins)
            if "i64" in flavour:
                name = name.replace("_i32", "_i64")
            if "general" in flavour:
                name = name.replace("_c1_", "_")
            if "global-hist" in flavour:
                if "global_hist" not in name:
                    name = name.replace("pair_stats_", "pair_stats_global_hist_", 1)
                shared = 0
            return name, shared

        monkeypatch.setattr(_sums_cuda, "_cuda_kernel_name", patched)

    return force


def pytest_collection_modifyitems(config, items):
    if cupy_available():
        return
    skip = pytest.mark.skip(reason="needs real GPU hardware (device_only); the GPU code path runs on the emulated GPU")
    for item in items:
        if "device_only" in item.keywords:
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


# ---- remote storage: real servers on loopback (tests/_servers.py) ----------------------------


def _need_remote(what: str):
    """Skip without the remote test packages; fail in CI (GPUDIFF_REQUIRE_REMOTE=1)."""
    import importlib.util

    missing = [m for m in ("moto", "s3fs", "fsspec", "aiohttp") if importlib.util.find_spec(m) is None]
    if missing:
        if os.environ.get("GPUDIFF_REQUIRE_REMOTE") == "1":
            pytest.fail(f"{what} needs {', '.join(missing)} (GPUDIFF_REQUIRE_REMOTE=1): pip install -e '.[test]'")
        pytest.skip(f"{what} needs {', '.join(missing)}")


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 (its own process), for the whole session."""
    _need_remote("the S3 tests")
    from tests._servers import S3Server

    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """``(options, bucket)``: storage options for the loopback S3 server and a fresh bucket on it.

    The options are also in ``GPUDIFF_STORAGE_OPTIONS`` (as a user would set them), and AWS_* point
    at dummy credentials so nothing reads the machine's own ``~/.aws``.
    """
    import json

    from tests._servers import new_bucket, s3_options

    opts = s3_options(s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("GPUDIFF_STORAGE_OPTIONS", json.dumps(opts))
    return opts, new_bucket(opts)


@pytest.fixture
def http_root(tmp_path_factory):
    """``(server, root)``: a byte-range HTTP server on 127.0.0.1 serving the folder ``root``."""
    _need_remote("the HTTP tests")
    from tests._servers import RangeHTTPServer

    root = tmp_path_factory.mktemp("http-root")
    server = RangeHTTPServer(root).start()
    yield server, root
    server.stop()
