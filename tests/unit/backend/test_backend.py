"""The namespace helpers on the CPU (their CuPy branches are in tests/gpu)."""

from __future__ import annotations

import numpy as np

from gpudiff.backend import backend_name, device_name, device_stream, get_namespace, to_device, to_host


def test_numpy_paths_are_identity_and_cheap():
    a = np.arange(12, dtype=np.uint16).reshape(3, 4)
    assert to_device(a, np) is a
    assert to_host(a) is a
    assert get_namespace(a, a) is np
    assert backend_name(np) == "numpy" and device_name(np) == "cpu"
    with device_stream(np):
        pass
