"""GPU paths of the sequence features (on CuPy where a device is, else on the emulated GPU): the
same numbers as on the CPU, through the real command line."""

from __future__ import annotations


import numpy as np
import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture
def clip(cdnet_clip):
    return cdnet_clip(24)


def test_run_sequence_features_on_the_gpu_equal_the_cpu(tmp_path, clip, gpu_backend):
    from gpudiff.cli._main import main
    from gpudiff.engine._store import ResultStore

    stores = {}
    for backend in ("numpy", gpu_backend):
        out = tmp_path / f"{backend}.zarr"
        assert main(["run", str(clip), "--out", str(out), "--backend", backend, "--flow", "--background",
                     "--bg-align", "--corrupt", "--cuts", "--save-maps", "foreground", "--metrics", "manhattan",
                     "--no-progress", "--chunk", "8"]) == 0
        stores[backend] = ResultStore.open(str(out))
    cpu, gpu = (stores[b].read() for b in ("numpy", gpu_backend))
    assert stores[gpu_backend].attrs["backend"] == gpu_backend  # the store says which path made it
    # the background model is elementwise float32: the masks are bit for bit the same
    np.testing.assert_array_equal(stores[gpu_backend]._arrays["maps/foreground"][:],
                                  stores["numpy"]._arrays["maps/foreground"][:])
    np.testing.assert_array_equal(gpu["foreground_fraction"], cpu["foreground_fraction"])
    np.testing.assert_array_equal(gpu["corrupt"], cpu["corrupt"])
    np.testing.assert_array_equal(gpu["cut"], cpu["cut"])
    np.testing.assert_allclose(gpu["kl_prev"], cpu["kl_prev"], rtol=1e-9)
    np.testing.assert_allclose(gpu["flow_mean"], cpu["flow_mean"], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(gpu["flow_p95"], cpu["flow_p95"], rtol=1e-3, atol=1e-3)


def test_dedup_on_the_gpu_equals_the_cpu(data_dir, gpu_backend):
    from gpudiff.engine import dedup
    from gpudiff.sequence._dedup import DedupOptions
    from gpudiff.io import open_source

    src = open_source(str(data_dir / "opencv-samples/video/vtest.avi"))

    class First60:
        def __len__(self):
            return 60

        def read(self, i):
            return src.read(i)

        def label(self, i):
            return src.label(i)

    for rule in ("pixels", "blocks"):
        cpu = dedup(First60(), options=DedupOptions(rule=rule, backend="numpy"))
        gpu = dedup(First60(), options=DedupOptions(rule=rule, backend=gpu_backend))
        assert gpu.keep.tolist() == cpu.keep.tolist()
        np.testing.assert_allclose(gpu.statistic, cpu.statistic, rtol=1e-6, atol=1e-9)
