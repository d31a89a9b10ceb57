"""``gpudiff demo``: the main job on an embedded default, runnable on a fresh machine.

Until the batch runner exists this shows the pairwise comparison on the bundled sample (a crop of
scikit-image's CC0 ``camera`` image) against a copy that a camera might have produced a moment later:
shifted, slightly blurred and noisy. It prints the metrics without and with alignment, and writes the
pair and a heat map of |difference| to the output folder.
"""

from __future__ import annotations

import os
from importlib import resources

import numpy as np

__all__ = ["sample_path", "make_sample_pair", "run_demo"]


def sample_path() -> str:
    """Path of the bundled sample image."""
    return str(resources.files("gpudiff") / "data" / "camera_crop.png")


def make_sample_pair(*, shift=(3, -5), blur=1.0, noise=2.0, seed=0):
    """(reference, moving): the sample and a shifted, blurred, noisy uint8 copy of it."""
    from scipy import ndimage  # noqa: PLC0415

    from .io.images import read_image  # noqa: PLC0415

    ref = read_image(sample_path())
    mov = np.roll(ref.astype(np.float32), shift, axis=(0, 1))
    if blur:
        mov = ndimage.gaussian_filter(mov, blur)
    if noise:
        mov = mov + np.random.default_rng(seed).normal(0.0, noise, mov.shape).astype(np.float32)
    return ref, np.clip(np.rint(mov), 0, 255).astype(np.uint8)


def run_demo(out_dir: str = "gpudiff-demo", *, backend: str = "auto", print_fn=print) -> int:
    from PIL import Image  # noqa: PLC0415

    from .compare import compare  # noqa: PLC0415
    from .diffmap import write_heatmap  # noqa: PLC0415

    os.makedirs(out_dir, exist_ok=True)
    ref, mov = make_sample_pair()
    ref_path = os.path.join(out_dir, "reference.png")
    mov_path = os.path.join(out_dir, "moving.png")
    Image.fromarray(ref).save(ref_path)
    Image.fromarray(mov).save(mov_path)

    print_fn(f"gpudiff demo: {ref_path} vs {mov_path} (the sample shifted by (3, -5), blurred, noisy)\n")
    print_fn("== the image against itself")
    print_fn(compare(ref_path, ref_path, backend=backend).format_text())
    print_fn("\n== plain comparison (misaligned: everything looks different)")
    print_fn(compare(ref_path, mov_path, backend=backend).format_text())
    print_fn("\n== --align --upsample 10 --blur 1 (what is left once the camera shake is removed)")
    aligned = compare(ref_path, mov_path, backend=backend, align=True, upsample=10, blur=1.0, diff_map=True)
    print_fn(aligned.format_text())
    heat = os.path.join(out_dir, "diff-aligned.png")
    write_heatmap(heat, aligned.diff_map)
    print_fn(f"\nheat map of |difference| after alignment: {heat}")
    return 0
