"""The flags of ``gpudiff``: one ``add_<command>_parser(sub)`` per subcommand, the option groups
they share (:func:`add_compare_options`, :func:`add_dedup_options`, :func:`add_sequence_options`) and
the parser class (one-line errors, helps that show defaults).

Only argument parsing lives here; :func:`gpudiff.cli._main.build_parser` wires each subcommand to the
handler that runs it (``_cmd_<command>`` there), and ``gpudiff report`` registers itself
(:mod:`._report`).
"""

from __future__ import annotations

import argparse
import math
import os

from ..errors import EXIT_USAGE
from ..options import ALL_METRICS, DEFAULT_MAX_PIXELS, HISTOGRAM_DISTANCES, CompareOptions

__all__ = [
    "add_compare_options",
    "add_dedup_options",
    "add_sequence_options",
    "add_storage_options",
    "add_compare_parser",
    "add_run_parser",
    "add_dedup_parser",
    "add_watch_parser",
    "add_status_parser",
    "add_export_parser",
    "add_demo_parser",
    "add_warmup_parser",
]


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help states its default (unless it already says it, or there is none)."""

    def _get_help_string(self, action):
        text = action.help or ""
        d = action.default
        none = d is None or d is False or d is argparse.SUPPRESS  # (0 and 0.0 are real defaults)
        if action.option_strings and "default" not in text and not none \
                and not isinstance(action, argparse._VersionAction):
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (usage goes to --help) and exit code 2; helps show defaults."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):  # noqa: D102
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _prefetch_count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 0 <= n <= 256:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of frames from 0 to 256")
    return n


def _positive_int(text: str) -> int:
    """A whole number (``1e6`` too); the options object checks its range."""
    try:
        if "e" in text.lower():
            f = float(text)
            if not math.isfinite(f) or f != int(f):
                raise ValueError(text)
            return int(f)
        return int(text)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _count(lo: int, hi: int | None = None, what: str = "a whole number"):
    """An argparse type: a whole number from ``lo`` (to ``hi``)."""

    def parse(text: str) -> int:
        value = _positive_int(text)
        if value < lo or (hi is not None and value > hi):
            span = f"from {lo} to {hi}" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"{text!r}: give {what} {span}")
        return value

    return parse


def _number(*, above: float | None = None, at_least: float | None = None, what: str = "a number"):
    """An argparse type: a finite float (never inf or nan), ``> above`` or ``>= at_least``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r}: give {what}, a finite number")
        if above is not None and not value > above:
            raise argparse.ArgumentTypeError(f"{text!r}: give {what} > {above:g}")
        if at_least is not None and not value >= at_least:
            raise argparse.ArgumentTypeError(f"{text!r}: give {what} >= {at_least:g}")
        return value

    return parse


#: ``--chunk``: items per task and store chunk, 1 to 2^31 (gpudiff.engine._runner.MAX_CHUNK).
_chunk_count = _count(1, 1 << 31, "a whole number of items")


# ----------------------------------------------------------------------------------------------
# option groups, shared by several subcommands


def add_storage_options(p: argparse.ArgumentParser) -> None:
    """``--storage-options JSON``: the filesystem options of s3:// (gs://, http(s)://) sources and stores."""
    p.add_argument("--storage-options", default=None, metavar="JSON",
                   help="for s3://, gs://, http(s):// sources and stores: a JSON object of fsspec options "
                   "(endpoint_url, key, secret, ..., flat or keyed by protocol); default: env "
                   "GPUDIFF_STORAGE_OPTIONS, then the client's own (AWS_*, ~/.aws). Credentials are used in "
                   "memory only: never stored in the result store, never printed")


def add_compare_options(p: argparse.ArgumentParser) -> None:
    """The comparison flags, shared by every subcommand that compares (compare, run, dedup...)."""
    d = CompareOptions()
    g = p.add_argument_group("how to compare (each maps to a field of gpudiff.CompareOptions)")
    g.add_argument("--shape", choices=("error", "crop", "resize"), default=d.shape,
                   help="different sizes: refuse (default), crop both to the common top-left region, "
                   "or resize moving to reference (bilinear)")
    g.add_argument("--color", choices=("gray", "luma", "rgb"), default=d.color,
                   help="gray: mean of the channels (default); luma: BT.601 weights; rgb: per channel")
    g.add_argument("--normalize", choices=("none", "minmax", "zscore", "histogram"), default=d.normalize,
                   help="exposure normalisation: minmax rescales each image to [0, 255] (a constant image "
                   "becomes 0), zscore to mean 0 / std 1, histogram matches moving's histogram to reference's")
    g.add_argument("--blur", type=_number(at_least=0, what="a Gaussian sigma in pixels"), default=d.blur,
                   metavar="SIGMA", help="Gaussian blur (sigma in pixels) before comparing, against noise")
    g.add_argument("--edges", choices=("none", "sobel", "prewitt"), default=d.edges,
                   help="compare gradient magnitudes instead of intensities")
    g.add_argument("--edge-threshold", type=_number(at_least=0, what="a gradient magnitude"), default=None,
                   metavar="T",
                   help="with --edges: binary edge maps (magnitude > T)")
    g.add_argument("--align", action="store_true",
                   help="estimate the translation (phase correlation) and compare over the overlap")
    g.add_argument("--upsample", type=_positive_int, default=d.upsample, metavar="N",
                   help="with --align: subpixel shift to 1/N pixel")
    g.add_argument("--mask-zeros", action="store_true",
                   help="with --align: zero pixels are invalid (masked normalised cross-correlation)")
    g.add_argument("--min-confidence", default=d.min_confidence, metavar="auto|C",
                   help="with --align: distrust a shift below this confidence (0-1); auto (default): phase "
                   "correlation must stand 5.5x above what unrelated images of that size give")
    g.add_argument("--max-shift", type=_number(above=0, what="a fraction of the frame (below 1) or pixels"),
                   default=d.max_shift, metavar="F|PX",
                   help=f"with --align: distrust a larger shift per axis, a fraction of the frame below 1, "
                   f"else pixels (default {d.max_shift:g})")
    g.add_argument("--on-bad-align", choices=("unaligned", "fail"), default=d.on_bad_align,
                   help="with --align, a distrusted shift: compare unaligned with a warning (default), "
                   "or fail the pair")
    g.add_argument("--tolerance", type=_number(at_least=0, what="a |difference|"), default=d.tolerance,
                   help="zero norm counts pixels with |difference| > TOLERANCE (default 0)")
    g.add_argument("--data-range", type=_number(above=0, what="a data range"), default=None, metavar="R",
                   help="data range for PSNR and SSIM (default: from the dtype)")
    g.add_argument("--bins", type=_positive_int, default=d.bins, help="histogram bins (default 256)")
    g.add_argument("--bins-range", default=d.bins_range, metavar="auto|dtype|LO:HI",
                   help="histogram value range: auto (default): uint8 0:256, uint16 0 to 1.25x the data's "
                   "maximum (a run samples 16 frames); dtype: the dtype's range; LO:HI in the input's units")
    g.add_argument("--metrics", default=None, metavar="A,B,...",
                   help=f"compute only these, comma-separated: {', '.join(ALL_METRICS)} (or histogram "
                   f"distances: {', '.join(HISTOGRAM_DISTANCES)}); default all")
    g.add_argument("--backend", choices=("auto", "numpy", "cupy", "emulated-gpu"),
                   default=os.environ.get("GPUDIFF_BACKEND", "auto") or "auto",
                   help="auto takes the GPU when CuPy finds one (env GPUDIFF_BACKEND); emulated-gpu runs the "
                   "GPU code path on the CPU under a CUDA emulator, to check a GPU job without one (slow)")
    g.add_argument("--max-pixels", type=_positive_int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help="refuse images that declare more pixels (decompression bombs); default 2^30")
    g.add_argument("--page", type=_positive_int, default=0,
                   help="page/frame of a multi-page TIFF or GIF (default 0)")
    g.add_argument("--config", metavar="FILE.toml", default=None,
                   help="read options from a TOML file (keys as CompareOptions fields, top level or "
                   "in a [compare] table); flags given on the command line win")


def add_dedup_options(p: argparse.ArgumentParser) -> None:
    """The keep/drop rule's flags (each a field of gpudiff.sequence.DedupOptions)."""
    from ..sequence._dedup import LIGHT_MODES, RULES, DedupOptions  # noqa: PLC0415

    d = DedupOptions()
    g = p.add_argument_group("when is a frame changed (fields of gpudiff.sequence.DedupOptions)")
    g.add_argument("--rule", choices=RULES, default=d.rule,
                   help="pixels: fraction of pixels over the noise level (default); blocks: mpdecimate's "
                   "8x8 block rule; metric: any compare metric against --threshold")
    g.add_argument("--noise", default=d.noise, metavar="auto|LEVEL",
                   help="pixels: |difference| that counts, in grey levels, or auto (K noise deviations, "
                   "estimated on the reference frame; default)")
    g.add_argument("--k", type=float, default=d.k, help=f"noise deviations with --noise auto (default {d.k:g})")
    g.add_argument("--min-changed", type=float, default=d.min_changed, metavar="FRACTION",
                   help=f"pixels: changed when more than this fraction of pixels changed (default {d.min_changed:g})")
    g.add_argument("--hi", type=float, default=d.hi, help="blocks: any 8x8 block SAD over this (8-bit levels)")
    g.add_argument("--lo", type=float, default=d.lo, help="blocks: block SAD counted as changed over this")
    g.add_argument("--frac", type=float, default=d.frac, help="blocks: changed when more than this fraction of blocks is over --lo")
    g.add_argument("--metric", default=None, help="metric: the compare metric (ssim, mse, hist_kl, ...)")
    g.add_argument("--threshold", type=float, default=None, help="metric: the threshold")
    g.add_argument("--light", choices=LIGHT_MODES, default=d.light,
                   help="robust to global light changes: gain (linear exposure), histogram (any tone curve), "
                   "edges (normalised Sobel magnitudes)")
    g.add_argument("--align", action="store_true",
                   help="register each frame to the kept frame first (a shaking or drifting camera)")
    g.add_argument("--upsample", type=_positive_int, default=d.upsample, metavar="N",
                   help=f"with --align: shift to 1/N pixel (default {d.upsample})")
    g.add_argument("--blur", type=float, default=d.blur, metavar="SIGMA", help="Gaussian blur before comparing")
    g.add_argument("--keep-repeats", action="store_true",
                   help="keep a frame identical to an earlier kept frame (dropped by default)")
    g.add_argument("--backend", choices=("auto", "numpy", "cupy", "emulated-gpu"),
                   default=os.environ.get("GPUDIFF_BACKEND", "auto") or "auto",
                   help="auto takes the GPU when CuPy finds one (env GPUDIFF_BACKEND); emulated-gpu runs the GPU code path on the CPU (slow)")
    g.add_argument("--keep-dir", default=None, metavar="DIR",
                   help="copy kept frames here (stack/video frames as PNG/TIFF files); originals never touched")
    g.add_argument("--link", action="store_true", help="hard-link kept files instead of copying (same filesystem)")


def add_sequence_options(p: argparse.ArgumentParser) -> None:
    """The sequence features of ``gpudiff run``: optical flow, corrupt frames, cuts, background model."""
    seq = p.add_argument_group("sequence features (consecutive pairs)")
    from ..sequence._motion import DEFAULT_FLOW_METHOD, FLOW_METHODS  # noqa: PLC0415

    seq.add_argument("--flow", nargs="?", const=DEFAULT_FLOW_METHOD, default=None, choices=FLOW_METHODS,
                     metavar="METHOD",
                     help=f"dense optical flow per pair: flow_mean, flow_p95 (pixels), flow_valid; METHOD "
                     f"{'|'.join(FLOW_METHODS)} (default {DEFAULT_FLOW_METHOD})")
    seq.add_argument("--flow-radius", type=_count(1, 1024, "a window radius in pixels"), default=7,
                     help="lk's window radius (default 7)")
    seq.add_argument("--no-flow-check", action="store_true",
                     help="skip the forward-backward check (one flow per pair instead of two; motion measured on "
                     "every pixel)")
    seq.add_argument("--corrupt", action="store_true", help="flag corrupted frames (columns corrupt, corrupt_score)")
    seq.add_argument("--cuts", action="store_true", help="flag scene cuts (columns cut, cut_score)")
    seq.add_argument("--background", action="store_true",
                     help="per-pixel running mean/std background model: foreground_fraction per frame")
    from ..sequence._background import BackgroundOptions  # noqa: PLC0415

    bd = BackgroundOptions()
    seq.add_argument("--bg-k", type=float, default=bd.k, help=f"foreground beyond K std (default {bd.k:g})")
    seq.add_argument("--bg-learning-rate", type=float, default=bd.learning_rate,
                     help=f"background update rate (default {bd.learning_rate:g})")
    seq.add_argument("--bg-min-std", type=float, default=bd.min_std,
                     help=f"std floor, fraction of the data range (default {bd.min_std:g})")
    seq.add_argument("--bg-init-frames", type=_positive_int, default=bd.init_frames,
                     help=f"frames that initialise the model (default {bd.init_frames})")
    seq.add_argument("--bg-cleanup", type=int, default=bd.cleanup_radius,
                     help=f"opening+closing disk radius of the mask (default {bd.cleanup_radius}; 0 none)")
    seq.add_argument("--bg-align", action="store_true",
                     help="align each frame to the first before the model (camera jitter)")
    seq.add_argument("--bg-model", choices=("gaussian", "mixture", "samples"), default=bd.model,
                     help=f"per-pixel model: one running Gaussian, a mixture of Gaussians (moving backgrounds), "
                     f"or ViBe-style samples (default {bd.model})")
    seq.add_argument("--bg-shadows", action="store_true",
                     help="cast shadows (darker, same colour) count as background, not foreground")


# ----------------------------------------------------------------------------------------------
# one parser per subcommand (each returned, for its handler)


def add_compare_parser(sub) -> argparse.ArgumentParser:
    """``gpudiff compare A B``: one pair, every metric."""
    p = sub.add_parser("compare", help="compare two images and print every metric",
                       description="Compare two images: norms, PSNR, NCC, SSIM, histogram distances.")
    p.add_argument("reference", help="reference image (PNG, JPEG, BMP, PGM/PPM, TIFF, GIF)")
    p.add_argument("moving", help="image compared with the reference")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--diff-map", metavar="PATH", default=None, help="write a heat-map PNG of |difference|")
    add_compare_options(p)
    return p


def add_run_parser(sub) -> argparse.ArgumentParser:
    """``gpudiff run SOURCE --out STORE.zarr``: a sequence or manifest into a result store."""
    p = sub.add_parser("run", help="compare the frames of a sequence (or a pair manifest) into a Zarr store",
                       description="Batch: a folder/glob of images, a multi-page TIFF/OME-TIFF, a Zarr array, "
                       "a video or a CSV pair manifest -> a resumable Zarr result store. Exit codes: 0 done, "
                       "1 finished with failed items, 2 usage/input error, 75 interrupted or disk full (rerun to resume).")
    p.add_argument("source", help="folder, glob, .tif stack, .zarr array, video, or manifest.csv")
    p.add_argument("--out", required=True, metavar="STORE.zarr",
                   help="the result store (created or resumed): a folder, or a URL such as s3://bucket/results.zarr")
    p.add_argument("--component", default=None, help="array path inside a Zarr store")
    p.add_argument("--pairs", choices=("consecutive", "first"), default="consecutive",
                   help="consecutive: frame t-1 with t (default); first: every frame with frame 0")
    p.add_argument("--chunk", type=_chunk_count, default=64,
                   help="items per task and store chunk (default 64: larger amortises store writes, "
                   "smaller loses less work to a kill)")
    p.add_argument("--save-maps", default="", metavar="diff,flow,foreground,labels",
                   help="also store per-pixel maps: diff, flow (with --flow), foreground and labels (CDnet's "
                   "0/50/170/255: background/shadow/unknown/foreground; with --background)")
    add_sequence_options(p)
    p.add_argument("--scheduler", default=None,
                   help="threads (default: local threads), local:N (N worker processes), cuda "
                   "(dask-cuda, a worker per GPU), or tcp://host:port of a running scheduler")
    p.add_argument("--workers", type=_count(1, what="a number of threads"), default=None, help="threads of the local scheduler")
    p.add_argument("--prefetch", type=_prefetch_count, default=None, metavar="N",
                   help="frames each task reads ahead, N requests in flight (default: 8 for s3://, gs://, "
                   "http(s):// sources, whose latency it hides; 0 for local files)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="do part I of N (default: SLURM_ARRAY_TASK_ID/COUNT when set)")
    p.add_argument("--overwrite", action="store_true", help="delete an existing store and start again")
    p.add_argument("--retry-failed", action="store_true",
                   help="also redo the failed items, re-reading their input files if they were fixed in place "
                   "(a folder, glob or manifest; refused when a done item's input changed)")
    p.add_argument("--verify-on-start", action="store_true",
                   help="read this shard's finished chunks back before resuming and redo damaged ones (on by "
                   "itself on FUSE mounts of object stores, whose rename is not atomic)")
    add_storage_options(p)
    p.add_argument("--log-json", action="store_true", help="progress and summary as JSON lines on stderr")
    p.add_argument("--no-progress", action="store_true", help="plain periodic lines even on a terminal")
    add_compare_options(p)
    return p


def add_dedup_parser(sub) -> argparse.ArgumentParser:
    """``gpudiff dedup SOURCE``: keep only the frames where something changed."""
    p = sub.add_parser("dedup", help="keep only the frames where something changed (time-lapse)",
                       description="Compare each frame with the last kept frame; keep it when it changed. "
                       "Exit codes: 0 done, 1 some frames unreadable (recorded), 2 usage/input error, "
                       "75 disk full (free space and rerun to resume).")
    p.add_argument("source", help="folder, glob, .tif stack, .zarr array, video or GIF")
    p.add_argument("--out", default=None, metavar="STORE.zarr", help="write every decision to a (resumable) store")
    p.add_argument("--explain", action="store_true", help="print each frame's decision, score and reason")
    p.add_argument("--json", action="store_true", help="print each decision as a JSON line")
    p.add_argument("--component", default=None, help="array path inside a Zarr store")
    p.add_argument("--chunk", type=_chunk_count, default=64, help="frames per store chunk")
    p.add_argument("--workers", type=_count(1, what="a number of parallel tasks"), default=None,
                   help="parallel tasks (default: CPU count)")
    p.add_argument("--overwrite", action="store_true", help="delete an existing store and start again")
    add_storage_options(p)
    add_dedup_options(p)
    return p


def add_watch_parser(sub) -> argparse.ArgumentParser:
    """``gpudiff watch FOLDER``: dedup each new snapshot as it lands."""
    p = sub.add_parser("watch", help="decide each new snapshot in a folder as it lands",
                       description="Poll FOLDER; each complete new image is compared with the last kept one and "
                       "copied to --keep-dir when it changed. State is kept on disk: a restart continues.")
    p.add_argument("folder", help="the folder the camera writes into (never modified)")
    p.add_argument("--state", default=None, help="state file (default KEEP_DIR/.gpudiff-watch.json)")
    p.add_argument("--interval", type=_number(above=0, what="seconds between polls"), default=2.0,
                   help="seconds between polls (default 2)")
    p.add_argument("--settle", type=_number(at_least=0, what="seconds"), default=1.0,
                   help="a file is complete once unchanged for this many seconds (default 1)")
    p.add_argument("--once", action="store_true", help="decide what is there now and exit (cron)")
    add_dedup_options(p)
    return p


def add_status_parser(sub) -> argparse.ArgumentParser:
    """``gpudiff status STORE``: done / failed / pending of a result store."""
    p = sub.add_parser("status", help="done / failed / pending of a result store, and what failed")
    p.add_argument("store", help="a result store (results.zarr, or its s3:// URL) made by gpudiff run")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--verify", action="store_true",
                   help="read every chunk of every array: a finished chunk whose data is missing or "
                        "unreadable (a crash without atomic rename, a power loss) is reported and re-marked "
                        "pending, so rerunning the same command recomputes it. Exit 0 clean, 1 found and "
                        "re-marked (run it while no run writes the store)")
    add_storage_options(p)
    return p


def add_export_parser(sub) -> argparse.ArgumentParser:
    """``gpudiff export STORE``: one row per item as CSV or Parquet."""
    p = sub.add_parser("export", help="one row per item as CSV (stdout) or Parquet")
    p.add_argument("store", help="a result store (results.zarr, or its s3:// URL) made by gpudiff run")
    p.add_argument("--format", choices=("csv", "parquet"), default="csv",
                   help="csv (to stdout or -o FILE) or parquet (needs -o FILE and pyarrow)")
    p.add_argument("-o", "--output", default=None, help="output file, local (CSV default: stdout)")
    add_storage_options(p)
    return p


def add_demo_parser(sub) -> argparse.ArgumentParser:
    """``gpudiff demo``: the batch pipeline on the bundled sample."""
    p = sub.add_parser("demo", help="run the main job on an embedded default (no data needed)",
                       description="Generate a short time-lapse from the bundled sample and run the batch "
                       "pipeline on it (local Dask, local Zarr store, NumPy without a GPU).")
    p.add_argument("--out", default="gpudiff-demo", help="folder for the sample data and the result store")
    p.add_argument("--pair", action="store_true", help="show one pairwise comparison instead of a batch")
    p.add_argument("--backend", choices=("auto", "numpy", "cupy", "emulated-gpu"),
                   default=os.environ.get("GPUDIFF_BACKEND", "auto") or "auto",
                   help="auto takes the GPU when CuPy finds one (env GPUDIFF_BACKEND); emulated-gpu runs the GPU code path on the CPU (slow)")
    return p


def add_warmup_parser(sub) -> argparse.ArgumentParser:
    """``gpudiff warmup``: compile the CPU kernels ahead."""
    p = sub.add_parser("warmup", help="compile the CPU kernels ahead (a fresh install's first run is then fast)",
                       description="Compile every common numba kernel signature once into numba's disk cache "
                       "(scripts/_venv.sh runs this after installing). Takes a minute or two once.")
    p.add_argument("--quiet", action="store_true", help="print only the last line")
    return p
