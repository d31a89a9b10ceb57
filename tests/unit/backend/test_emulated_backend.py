"""The emulated GPU refuses what CuPy refuses, and counts what crosses the host <-> device link."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from gpudiff import backend as _backend
from gpudiff.backend import _emulated as emu
from gpudiff.errors import ConfigError

xp = _backend.resolve_backend("emulated-gpu")
HAVE_CUPY = emu._real() is not None


def test_it_takes_the_gpu_code_path_and_says_so():
    assert _backend.is_cupy(xp) and _backend.is_emulated(xp)
    assert _backend.backend_name(xp) == "emulated-gpu"
    assert _backend.device_name(xp) == emu.DEVICE_NAME
    d = xp.asarray(np.arange(6).reshape(2, 3))
    assert _backend.is_device_array(d) and not _backend.is_device_array(np.zeros(1))
    assert _backend.get_namespace(np.zeros(1), d) is xp
    with pytest.raises(ConfigError, match="emulated-gpu"):
        _backend.resolve_backend("emulated")


def test_implicit_device_to_host_conversion_is_refused_with_cupys_message():
    d = xp.asarray(np.ones((3, 3), np.float32))
    for convert in (np.asarray, np.array, lambda a: np.testing.assert_array_equal(a, 1)):
        with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
            convert(d)
    np.testing.assert_array_equal(d.get(), np.ones((3, 3), np.float32))
    np.testing.assert_array_equal(_backend.to_host(d), np.ones((3, 3), np.float32))


def test_host_arrays_mixed_with_device_arrays_are_refused():
    d = xp.asarray(np.ones(4))
    h = np.ones(4)
    with pytest.raises(TypeError, match="Unsupported type"):
        d + h
    with pytest.raises(TypeError):
        h + d
    with pytest.raises(TypeError, match="host numpy.ndarray"):
        xp.maximum(d, h)
    with pytest.raises(TypeError, match="host numpy.ndarray"):
        xp.stack([d, h])
    # scalars are fine, NumPy's too, and results stay on the device
    assert _backend.is_device_array(d * 2 + np.float32(1))
    assert _backend.is_device_array(np.float64(2.0) * d)


def test_reductions_give_zero_d_device_arrays_and_scalars_transfer():
    d = xp.asarray(np.arange(10, dtype=np.float64))
    s = d.sum()
    assert _backend.is_device_array(s) and s.shape == ()
    assert _backend.is_device_array(xp.max(d))
    with emu.transfers() as log:
        assert float(s) == 45.0 and s.item() == 45.0 and int(xp.argmax(d)) == 9
    assert log.d2h_count == 3 and log.h2d_count == 0


@pytest.mark.skipif(not HAVE_CUPY, reason="needs the real CuPy package (the gpu-api extra) as the oracle")
def test_names_and_keywords_are_checked_against_the_real_cupy():
    d = xp.asarray(np.ones((4, 4)))
    with pytest.raises(AttributeError, match="CuPy has no cupy.not_a_function"):
        xp.not_a_function  # noqa: B018
    with pytest.raises(TypeError, match="unexpected keyword argument 'axes'"):
        xp.sum(d, axes=0)
    ndi = _backend.ndimage(xp)
    with pytest.raises(TypeError, match="'truncated'"):
        ndi.gaussian_filter(d, 1.0, truncated=3.0)
    with pytest.raises(AttributeError, match="cupyx.scipy.ndimage.not_a_filter"):
        ndi.not_a_filter  # noqa: B018
    assert "cupy.sum" in emu.used_names and "cupyx.scipy.ndimage.gaussian_filter" in emu.used_names


def test_kernel_launches_refuse_host_pointers_and_wrong_types():
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("needs a C++ compiler for the CUDA emulator")
    k = xp.RawKernel(r'extern "C" __global__ void twice(const float* a, float* o, int n) {'
                     r" int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) o[i] = 2.0f * a[i]; }", "twice")
    a = xp.asarray(np.arange(100, dtype=np.float32))
    o = xp.zeros(100, dtype=xp.float32)
    k((4,), (32,), (a, o, np.int32(100)))
    np.testing.assert_array_equal(o.get(), 2 * np.arange(100, dtype=np.float32))
    with pytest.raises(TypeError, match="host numpy.ndarray passed as a device pointer"):
        k((4,), (32,), (np.zeros(100, np.float32), o, np.int32(100)))
    with pytest.raises(TypeError, match=r"argument 2 \(int\) got int64"):
        k((4,), (32,), (a, o, 100))  # a Python int is int64, as CuPy passes it: on a GPU, garbage
    with pytest.raises(TypeError, match="argument 1 .*float64"):
        k((4,), (32,), (a, xp.zeros(100, dtype=xp.float64), np.int32(100)))


def test_device_stream_event_api():
    dev = xp.cuda.Device()
    assert dev.id == 0 and dev.attributes["MultiProcessorCount"] >= 1
    with xp.cuda.Device(0), xp.cuda.Stream(non_blocking=True) as s:
        assert xp.cuda.get_current_stream() is s
        e0, e1 = xp.cuda.Event(), xp.cuda.Event()
        e0.record()
        e1.record()
        e1.synchronize()
        assert xp.cuda.get_elapsed_time(e0, e1) >= 0
    assert xp.cuda.get_current_stream() is not s
    props = xp.cuda.runtime.getDeviceProperties(0)
    assert props["name"].decode() == emu.DEVICE_NAME
    with pytest.raises(RuntimeError, match="device 0 only"):
        xp.cuda.Device(1)


def test_pinned_staging_counts_one_upload_per_frame():
    a = np.random.default_rng(0).integers(0, 255, (64, 48), dtype=np.uint8)
    with emu.transfers() as log, _backend.device_stream(xp):
        d = _backend.to_device(a, xp)
    assert log.h2d_count == 1 and log.h2d_bytes == a.nbytes and log.d2h_count == 0
    np.testing.assert_array_equal(d.get(), a)


def test_a_gpu_run_moves_each_frame_to_the_device_once(tmp_path, data_dir):
    """The engine's promise: each frame crosses host -> device once; only small results come back.

    Once per chunk, precisely: chunks are independent tasks (resumable, shardable), so the frame
    on a chunk boundary is the moving frame of one chunk's last pair and the reference of the
    next chunk's first pair, and is uploaded by both: n + (chunks - 1) uploads for n frames.
    """
    from gpudiff.cli._main import main
    from gpudiff.io import open_source

    src = tmp_path / "clip"
    src.mkdir()
    frames = sorted((data_dir / "cdnet2014-traffic-subset/input").iterdir())[:12]
    for f in frames:
        shutil.copy2(f, src / f.name)
    n = len(frames)
    chunks = -(-(n - 1) // 4)
    frame_bytes = open_source(str(src)).read(0).nbytes
    for extra in ([], ["--align"]):
        out = tmp_path / f"run{len(extra)}.zarr"
        with emu.transfers() as log:
            assert main(["run", str(src), "--out", str(out), "--backend", "emulated-gpu", "--chunk", "4",
                         "--no-progress", *extra]) == 0
        frame_uploads = [e for e in log.events if e[0] == "h2d" and e[1] == frame_bytes]
        assert len(frame_uploads) == n + chunks - 1, (extra, len(frame_uploads), n)
        small = log.h2d_bytes - len(frame_uploads) * frame_bytes
        assert small < 0.05 * frame_bytes, (extra, small)  # SSIM's window weights and the like, not frames
        per_item_back = log.d2h_bytes / (n - 1)
        assert per_item_back < 0.05 * frame_bytes, (extra, per_item_back, frame_bytes)
