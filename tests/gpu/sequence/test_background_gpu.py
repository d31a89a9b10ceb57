"""GPU path of the background models (CuPy where a device is, else the emulated GPU): every model,
with shadows and label maps, aligned by subpixel shifts, computes the CPU's bits."""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from gpudiff.sequence._background import BackgroundModel, BackgroundOptions, estimate_shift  # noqa: E402

pytestmark = pytest.mark.gpu

_STATE = {"gaussian": ("mean", "var", "count"), "mixture": ("weight", "mean", "var", "count"),
          "samples": ("samples", "count", "pixel")}


@pytest.mark.parametrize("model", ["gaussian", "mixture", "samples"])
def test_models_on_the_gpu_equal_the_cpu(data_dir, cp, model):
    folder = data_dir / "cdnet2014-traffic-subset" / "input"
    frames = [cv2.cvtColor(cv2.imread(str(folder / f"in{i:06d}.jpg")), cv2.COLOR_BGR2RGB)[:120, :160]
              for i in range(950, 962)]
    o = BackgroundOptions(model=model, shadows=True, align=True, upsample_factor=4)
    shifts = [estimate_shift(frames[0], f, options=o) for f in frames]
    assert any(not float(s).is_integer() for sh in shifts for s in sh)  # the bilinear path
    a, b = BackgroundModel(options=o, xp=np), BackgroundModel(options=o, xp=cp)
    seen = set()
    for f, s in zip(frames, shifts):
        ma, la = a.update(f, shift=s, labels=True)
        mb, lb = b.update(cp.asarray(f), shift=s, labels=True)
        np.testing.assert_array_equal(ma, cp.asnumpy(mb))
        np.testing.assert_array_equal(la, cp.asnumpy(lb))
        seen |= set(np.unique(la).tolist())
    assert {0, 170, 255} <= seen
    for name in _STATE[model]:
        np.testing.assert_array_equal(getattr(a.state, name), cp.asnumpy(getattr(b.state, name)))
