"""GPU paths of the batch engine: on CuPy where a device is, else on the emulated GPU."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def test_to_device_through_pinned_staging_is_exact(cp):
    cupy = cp
    from gpudiff.backend import device_stream, to_device

    rng = np.random.default_rng(0)
    for dtype in (np.uint8, np.uint16, np.float32):
        a = (rng.random((517, 333)) * 200).astype(dtype)
        with device_stream(cupy):
            d = to_device(a, cupy)
            assert isinstance(d, cupy.ndarray)
            np.testing.assert_array_equal(cupy.asnumpy(d), a)


def test_batch_on_the_gpu_equals_the_cpu(tmp_path, data_dir, gpu_backend):
    from gpudiff.cli._main import main
    from gpudiff.engine._store import ResultStore

    src = data_dir / "cdnet2014-traffic-subset/input"
    outs = {}
    for backend in ("numpy", gpu_backend):
        out = tmp_path / f"{backend}.zarr"
        assert main(["run", str(src), "--out", str(out), "--backend", backend, "--align", "--upsample", "10",
                     "--no-progress"]) == 0
        outs[backend] = ResultStore.open(str(out)).read()
    for k, v in outs["numpy"].items():
        if np.asarray(v).dtype.kind == "f":
            np.testing.assert_allclose(outs[gpu_backend][k], v, rtol=1e-5, atol=1e-6, err_msg=k)
