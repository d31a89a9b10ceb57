"""``gpudiff demo``: the main job on an embedded default, runnable on a fresh machine.

The bundled sample (a crop of scikit-image's CC0 ``camera`` image) becomes a short time-lapse as a
camera on a slowly drifting mount would record it: subpixel drift, sensor noise, an object passing
through, one corrupted frame and an exposure jump. ``run_demo`` writes it as a multi-page TIFF and
runs the whole batch pipeline on it (local Dask scheduler, local Zarr store, NumPy backend where
there is no GPU), then prints what changed. ``run_pair_demo`` shows a single pairwise comparison.
"""

from __future__ import annotations

import io
import os
from importlib import resources

import numpy as np

__all__ = ["sample_path", "make_sample_pair", "make_sample_sequence", "run_demo", "run_pair_demo"]


def sample_path() -> str:
    """Path of the bundled sample image."""
    return str(resources.files("gpudiff") / "data" / "camera_crop.png")


def make_sample_pair(*, shift=(3, -5), blur=1.0, noise=2.0, seed=0):
    """(reference, moving): the sample and a shifted, blurred, noisy uint8 copy of it."""
    from scipy import ndimage  # noqa: PLC0415

    from ..io._images import read_image  # noqa: PLC0415

    ref = read_image(sample_path())
    mov = np.roll(ref.astype(np.float32), shift, axis=(0, 1))
    if blur:
        mov = ndimage.gaussian_filter(mov, blur)
    if noise:
        mov = mov + np.random.default_rng(seed).normal(0.0, noise, mov.shape).astype(np.float32)
    return ref, np.clip(np.rint(mov), 0, 255).astype(np.uint8)


def make_sample_sequence(n: int = 48, *, seed: int = 0) -> np.ndarray:
    """(n, H, W) uint8 frames: drift of (0.3, -0.2) px per frame, noise sigma 1.5, a bright object
    entering from the left edge in frame 18 and crossing until 25, frame 34 with a blacked-out band (corruption), exposure x1.3 from 40."""
    from scipy import ndimage  # noqa: PLC0415

    from ..io._images import read_image  # noqa: PLC0415

    base = read_image(sample_path()).astype(np.float32)
    rng = np.random.default_rng(seed)
    frames = np.empty((n,) + base.shape, dtype=np.uint8)
    for t in range(n):
        f = ndimage.shift(base, (0.3 * t, -0.2 * t), order=1, mode="nearest")
        if 18 <= t <= 25:  # enters from the left edge (as real objects do), 25 px per frame
            x = 25 * (t - 18) - 25
            f[150:180, max(0, x) : x + 30] = 250.0
        if t >= 40:
            f = f * 1.3
        f = f + rng.normal(0.0, 1.5, f.shape).astype(np.float32)
        if t == 34:
            f[100:116, :] = 0.0
        frames[t] = np.clip(np.rint(f), 0, 255).astype(np.uint8)
    return frames


def run_demo(out_dir: str = "gpudiff-demo", *, backend: str = "auto", print_fn=print) -> int:
    """The batch pipeline on the generated time-lapse; prints a summary. Returns the run's exit code."""
    import tifffile  # noqa: PLC0415

    from ..options import CompareOptions  # noqa: PLC0415
    from ..engine._runner import RunConfig, run  # noqa: PLC0415
    from ..engine._store import ResultStore  # noqa: PLC0415

    os.makedirs(out_dir, exist_ok=True)
    stack = os.path.join(out_dir, "timelapse.tif")
    frames = make_sample_sequence()
    tifffile.imwrite(stack, frames, photometric="minisblack")
    store_path = os.path.join(out_dir, "results.zarr")
    print_fn(f"gpudiff demo: {len(frames)} frames {frames.shape[1]}x{frames.shape[2]} -> {stack}")
    print_fn("  (drift of 0.3/-0.2 px per frame, noise, an object in frames 18-25, frame 34 corrupted, "
             "exposure x1.3 from frame 40)")
    options = CompareOptions(align=True, upsample=10, blur=1.0, backend=backend)
    cfg = RunConfig(source=stack, out=store_path, chunk=8, overwrite=True, progress=False, log_every_s=1e9,
                    save_maps=("diff",), events=True)
    report = run(cfg, options, stream=io.StringIO())
    store = ResultStore.open(store_path)
    cols = store.read(["reference_index", "moving_index", "manhattan_per_pixel", "ssim", "hist_kl", "shift",
                       "corrupt", "cut"])
    rate = (report.done + report.failed) / report.elapsed_s if report.elapsed_s else 0.0
    print_fn(f"gpudiff run {stack} --out {store_path} --align --upsample 10 --blur 1 --save-maps diff "
             "--corrupt --cuts")
    print_fn(f"  {report.done} pairs done, {report.failed} failed, in {report.elapsed_s:.1f} s "
             f"({rate:.1f} pairs/s, backend {store.attrs.get('backend')})")
    from ._main import _warm_note  # noqa: PLC0415

    warm = _warm_note(report)
    if warm:
        print_fn(f"  {warm}")
    order = np.argsort(-np.nan_to_num(cols["manhattan_per_pixel"], nan=-1))
    print_fn("  the most changed pairs (after alignment):")
    print_fn("    frames    L1/pixel   SSIM    hist KL   shift (dy, dx)")
    for i in order[:6]:
        dy, dx = cols["shift"][i]
        print_fn(f"    {cols['reference_index'][i]:>2} -> {cols['moving_index'][i]:<3} "
                 f"{cols['manhattan_per_pixel'][i]:8.3f}  {cols['ssim'][i]:6.3f}  {cols['hist_kl'][i]:8.4f}"
                 f"   ({dy:+.2f}, {dx:+.2f})")
    quiet = np.nanmedian(cols["manhattan_per_pixel"])
    print_fn(f"  median L1/pixel of all pairs: {quiet:.3f} (noise level)")
    corrupt = (cols["moving_index"][cols["corrupt"] == 1]).tolist()
    cuts = (cols["moving_index"][cols["cut"] == 1]).tolist()
    print_fn(f"  flagged corrupt: {corrupt or 'none'} (made: 34); cuts: {cuts or 'none'} (exposure x1.3 from 40)")

    from ..report import build_report  # noqa: PLC0415

    page = os.path.join(out_dir, "report.html")
    summary = build_report(store_path, html=page)
    print_fn(f"gpudiff report {store_path} --html {page}  ({summary.page_bytes / 1e6:.2f} MB, open it in a browser)")
    print_fn(f"  next: gpudiff status {store_path} ; gpudiff export {store_path} --format csv")
    return report.exit_code


def run_pair_demo(out_dir: str = "gpudiff-demo", *, backend: str = "auto", print_fn=print) -> int:
    from PIL import Image  # noqa: PLC0415

    from ..pair._compare import compare  # noqa: PLC0415
    from ..pair._diffmap import write_heatmap  # noqa: PLC0415

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
