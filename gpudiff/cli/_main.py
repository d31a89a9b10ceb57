"""Command line: ``gpudiff compare A B`` (and, as they land, ``run``, ``status``, ``export``, ``demo``).

Each subcommand is a thin wrapper over a library call. ``main(argv=None) -> int`` so tests call it
directly. Errors are one line on stderr with a documented exit code; a traceback is a bug (set
``GPUDIFF_DEBUG=1`` to see one anyway).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .._version import __version__
from ..errors import EXIT_OK, EXIT_USAGE, ConfigError, GpudiffError
from ..options import ALL_METRICS, DEFAULT_MAX_PIXELS, HISTOGRAM_DISTANCES, CompareOptions

__all__ = ["main", "build_parser"]


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


def _n(count: int, word: str) -> str:
    """'1 chunk', '2 chunks'."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def _positive_int(text: str) -> int:
    try:
        value = int(float(text)) if "e" in text.lower() else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    return value


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
    g.add_argument("--blur", type=float, default=d.blur, metavar="SIGMA",
                   help="Gaussian blur (sigma in pixels) before comparing, against noise")
    g.add_argument("--edges", choices=("none", "sobel", "prewitt"), default=d.edges,
                   help="compare gradient magnitudes instead of intensities")
    g.add_argument("--edge-threshold", type=float, default=None, metavar="T",
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
    g.add_argument("--max-shift", type=float, default=d.max_shift, metavar="F|PX",
                   help=f"with --align: distrust a larger shift per axis, a fraction of the frame below 1, "
                   f"else pixels (default {d.max_shift:g})")
    g.add_argument("--on-bad-align", choices=("unaligned", "fail"), default=d.on_bad_align,
                   help="with --align, a distrusted shift: compare unaligned with a warning (default), "
                   "or fail the pair")
    g.add_argument("--tolerance", type=float, default=d.tolerance,
                   help="zero norm counts pixels with |difference| > TOLERANCE (default 0)")
    g.add_argument("--data-range", type=float, default=None, metavar="R",
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


def load_config(path) -> dict:
    """The options in a TOML file, as CompareOptions field names -> values (validated by it)."""
    import dataclasses  # noqa: PLC0415

    try:
        import tomllib  # noqa: PLC0415
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # noqa: PLC0415

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: not found: check the path") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"--config {path}: not a readable TOML file ({_one_line(exc)}): fix its syntax") from None
    data = data.get("compare", data)
    known = {f.name for f in dataclasses.fields(CompareOptions)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"--config {path}: unknown option(s) {', '.join(unknown)}: known are "
                          f"{', '.join(sorted(known))}")
    if isinstance(data.get("metrics"), list):
        data["metrics"] = ",".join(data["metrics"])
    return data


def options_from_args(args: argparse.Namespace) -> CompareOptions:
    return CompareOptions(
        shape=args.shape,
        color=args.color,
        normalize=args.normalize,
        blur=args.blur,
        edges=args.edges,
        edge_threshold=args.edge_threshold,
        align=args.align,
        upsample=args.upsample,
        mask_zeros=args.mask_zeros,
        min_confidence=args.min_confidence,
        max_shift=args.max_shift,
        on_bad_align=args.on_bad_align,
        tolerance=args.tolerance,
        data_range=args.data_range,
        bins=args.bins,
        bins_range=args.bins_range,
        metrics=args.metrics,
        backend=args.backend,
        max_pixels=args.max_pixels,
        page=args.page,
    )


def _cmd_compare(args) -> int:
    from ..pair._compare import compare  # noqa: PLC0415

    options = options_from_args(args)
    result = compare(args.reference, args.moving, options=options, diff_map=args.diff_map is not None)
    if args.diff_map is not None:
        from ..pair._diffmap import write_heatmap  # noqa: PLC0415

        write_heatmap(args.diff_map, result.diff_map)
    if result.align_ok is False:
        print(f"gpudiff compare: warning: alignment not trusted, compared unaligned: {result.align_warning} "
              "(--on-bad-align fail makes it an error; --min-confidence 0 trusts any shift)", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_dict(), allow_nan=False))
    else:
        print(result.format_text())
    return EXIT_OK


def _cmd_run(args) -> int:
    from ..engine._plan import parse_shard  # noqa: PLC0415
    from ..engine._runner import RunConfig, run  # noqa: PLC0415

    options = options_from_args(args)
    cfg = RunConfig(
        source=args.source,
        out=args.out,
        component=args.component,
        pairs=args.pairs,
        chunk=args.chunk,
        save_maps=tuple(m for m in (args.save_maps or "").split(",") if m),
        scheduler=args.scheduler,
        workers=args.workers,
        shard=parse_shard(args.shard) if args.shard else None,
        overwrite=args.overwrite,
        log_json=args.log_json,
        progress=False if args.no_progress else None,
        flow=args.flow,
        flow_radius=args.flow_radius,
        events=args.corrupt or args.cuts,
        background=args.background,
        background_options=_background_options(args),
        event_options=None,
    )
    report = run(cfg, options)
    items = report.done + report.failed + report.pending
    if args.log_json:
        print(json.dumps({"event": "summary", "items": items, "done": report.done, "failed": report.failed,
                          "pending": report.pending, "elapsed_s": round(report.elapsed_s, 3),
                          "exit_code": report.exit_code, "store": args.out,
                          "findings": _run_findings(args.out, raw=True)}), file=sys.stderr)
    else:
        print(f"gpudiff run: {items} items: {report.done} done, {report.failed} failed, {report.pending} "
              f"pending ({_n(report.chunks_run, 'chunk')} run, {report.chunks_skipped} already done) in "
              f"{report.elapsed_s:.1f} s; store {args.out}", file=sys.stderr)
        warm = _warm_note(report)
        if warm:
            print(f"gpudiff run: {warm}", file=sys.stderr)
        if report.bins_note:
            print(f"gpudiff run: {report.bins_note}", file=sys.stderr)
        found = _run_findings(args.out)
        if found:
            print(f"gpudiff run: found {found}", file=sys.stderr)
        for item, err in report.failures[:5]:
            print(f"  item {item} failed: {err}", file=sys.stderr)
        if len(report.failures) > 5:
            print(f"  ... and {len(report.failures) - 5} more (gpudiff status {args.out})", file=sys.stderr)
        if report.pending:
            print("gpudiff run: interrupted; run the same command again to resume", file=sys.stderr)
    return report.exit_code


def _warm_note(report) -> str:
    """The throughput after start-up, when start-up (first-use compilation, first reads) was a
    large part of the run; empty otherwise."""
    if report.startup_s is None or report.warm_rate is None or report.elapsed_s <= 0:
        return ""
    if report.startup_s < 1.0 or report.startup_s < 0.2 * report.elapsed_s:
        return ""
    return (f"{report.warm_rate:.1f} items/s after {report.startup_s:.1f} s of start-up before the first item "
            "(kernel compilation on first use: gpudiff warmup does it once ahead)")


def _run_findings(out, raw: bool = False):
    """The store's findings as one line (or the dict, ``raw``); empty when the store cannot say."""
    from ..engine._store import ResultStore  # noqa: PLC0415

    try:
        found = ResultStore.open(out).findings()
    except Exception:  # noqa: BLE001 - a summary line must never turn a finished run into a failure
        found = {}
    return found if raw else format_findings(found)


def _background_options(args) -> dict | None:
    if not args.background:
        return None
    from ..sequence._background import BackgroundOptions  # noqa: PLC0415

    d = BackgroundOptions()
    return BackgroundOptions(k=args.bg_k, learning_rate=args.bg_learning_rate, min_std=args.bg_min_std,
                             init_frames=args.bg_init_frames, cleanup_radius=args.bg_cleanup,
                             align=args.bg_align, color=d.color).to_dict()


def _cmd_status(args) -> int:
    from ..engine._store import ResultStore  # noqa: PLC0415

    store = ResultStore.open(args.store)
    summary = store.summary()
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        print(_format_status(args.store, summary))
    return EXIT_OK


def format_findings(f: dict) -> str:
    """One line of what a run found: flagged frames, distrusted alignments, foreground, motion."""
    parts = []
    for key, word in (("corrupt", "corrupt frames"), ("cut", "cuts"), ("unaligned", "pairs compared unaligned "
                                                                      "(alignment not trusted)")):
        if key in f:
            parts.append(f"{f[key]} {word}")
    if "foreground_fraction" in f:
        g = f["foreground_fraction"]
        parts.append(f"foreground {100 * g['mean']:.2g} % of the frame on average (max {100 * g['max']:.2g} %)")
    if "flow_mean" in f:
        g = f["flow_mean"]
        parts.append(f"motion {g['mean']:.2g} px on average (max {g['max']:.2g} px)")
    return "; ".join(parts)


def _format_status(path, s: dict) -> str:
    lines = [f"{path}: {s.get('n_items', '?')} items: {s.get('done', 0)} done, {s.get('failed', 0)} failed, "
             f"{s.get('pending', 0)} pending"]
    for k in ("created", "last_write", "rate_items_per_s", "backend", "device"):
        if s.get(k) is not None:
            lines.append(f"  {k.replace('_', ' ')}: {s[k]}")
    src = s.get("source")
    if isinstance(src, dict):
        count = f" ({src['count']} files)" if src.get("count") is not None else ""
        lines.append(f"  source: {src.get('kind', '?')} {src.get('spec', '?')}{count}")
    found = format_findings(s.get("findings") or {})
    if found:
        lines.append(f"  found: {found}")
    for f in s.get("failures", [])[:20]:
        if isinstance(f, dict):
            lines.append(f"  item {f.get('item')} failed: {f.get('error')}")
        else:
            lines.append(f"  item {f[0]} failed: {f[1]}")
    return "\n".join(lines)


def _cmd_export(args) -> int:
    from ..engine._export import export_csv, export_parquet  # noqa: PLC0415
    from ..engine._store import ResultStore  # noqa: PLC0415

    store = ResultStore.open(args.store)
    if args.format == "parquet":
        if not args.output:
            raise ConfigError("--format parquet writes a file: add -o results.parquet")
        export_parquet(store, args.output)
    elif args.output:
        with open(args.output, "w", newline="") as f:
            export_csv(store, f)
    else:
        export_csv(store, sys.stdout)
    return EXIT_OK


def _cmd_demo(args) -> int:
    from ._demo import run_demo, run_pair_demo  # noqa: PLC0415

    if args.pair:
        return run_pair_demo(args.out, backend=args.backend)
    return run_demo(args.out, backend=args.backend)


def _cmd_warmup(args) -> int:
    from ._warmup import warmup  # noqa: PLC0415

    lines = []
    warmup(print_fn=lines.append if args.quiet else print)
    if args.quiet and lines:
        print(lines[-1])
    return EXIT_OK


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


def dedup_options_from_args(args):
    from ..sequence._dedup import DedupOptions  # noqa: PLC0415

    return DedupOptions(rule=args.rule, noise=args.noise, k=args.k, min_changed=args.min_changed, hi=args.hi,
                        lo=args.lo, frac=args.frac, metric=args.metric, threshold=args.threshold, light=args.light,
                        align=args.align, upsample=args.upsample, blur=args.blur,
                        drop_repeats=not args.keep_repeats, backend=args.backend)


def _cmd_dedup(args) -> int:
    from ..engine._timelapse import run_dedup  # noqa: PLC0415

    options = dedup_options_from_args(args)
    if not args.out and not args.keep_dir and not args.explain and not args.json:
        raise ConfigError("nothing to write: give --keep-dir DIR, --out STORE.zarr, --explain or --json")

    def show(d):
        if args.explain:
            verdict = "FAILED" if d.failed else ("keep" if d.keep else "drop")
            score = "" if d.statistic != d.statistic else f" score {d.statistic:.6g} vs {d.threshold:.6g}"
            print(f"{d.index}\t{verdict}\t{d.reason}{score}")
        elif args.json:
            print(json.dumps({"frame": d.index, "keep": d.keep, "failed": d.failed, "reference": d.reference,
                              "score": None if d.statistic != d.statistic else d.statistic,
                              "threshold": None if d.threshold != d.threshold else d.threshold,
                              "repeat_of": d.repeat_of, "reason": d.reason}))

    report = run_dedup(args.source, options=options, out=args.out, keep_dir=args.keep_dir, link=args.link,
                       overwrite=args.overwrite, component=args.component, chunk=args.chunk,
                       workers=args.workers, on_decision=show)
    print(f"gpudiff dedup: {report.frames} frames: {report.kept} kept, {report.dropped} dropped, "
          f"{report.failed} failed ({options.describe()}) in {report.elapsed_s:.1f} s"
          + (f"; store {args.out}" if args.out else "") + (f"; kept frames in {args.keep_dir}" if args.keep_dir else ""),
          file=sys.stderr)
    return report.exit_code


def _cmd_watch(args) -> int:
    from ..engine._timelapse import watch  # noqa: PLC0415

    if not args.keep_dir:
        raise ConfigError("gpudiff watch needs --keep-dir DIR: where the kept snapshots go")
    report = watch(args.folder, keep_dir=args.keep_dir, options=dedup_options_from_args(args),
                   state_path=args.state, interval=args.interval, settle=args.settle, once=args.once,
                   link=args.link)
    waiting = report.waiting_summary(args.settle)
    print(f"gpudiff watch: {_n(report.decided, 'new frame')} decided, {report.kept} kept"
          + (f"; {waiting}" if waiting else ""), file=sys.stderr)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gpudiff", description="How different are these two images? At archive scale.")
    parser.add_argument("--version", action="version", version=f"gpudiff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("compare", help="compare two images and print every metric",
                       description="Compare two images: norms, PSNR, NCC, SSIM, histogram distances.")
    p.add_argument("reference", help="reference image (PNG, JPEG, BMP, PGM/PPM, TIFF, GIF)")
    p.add_argument("moving", help="image compared with the reference")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--diff-map", metavar="PATH", default=None, help="write a heat-map PNG of |difference|")
    add_compare_options(p)
    p.set_defaults(func=_cmd_compare)
    p = sub.add_parser("run", help="compare the frames of a sequence (or a pair manifest) into a Zarr store",
                       description="Batch: a folder/glob of images, a multi-page TIFF/OME-TIFF, a Zarr array, "
                       "a video or a CSV pair manifest -> a resumable Zarr result store. Exit codes: 0 done, "
                       "1 finished with failed items, 2 usage/input error, 75 interrupted (rerun to resume).")
    p.add_argument("source", help="folder, glob, .tif stack, .zarr array, video, or manifest.csv")
    p.add_argument("--out", required=True, metavar="STORE.zarr", help="the result store (created or resumed)")
    p.add_argument("--component", default=None, help="array path inside a Zarr store")
    p.add_argument("--pairs", choices=("consecutive", "first"), default="consecutive",
                   help="consecutive: frame t-1 with t (default); first: every frame with frame 0")
    p.add_argument("--chunk", type=_positive_int, default=64,
                   help="items per task and store chunk (default 64: larger amortises store writes, "
                   "smaller loses less work to a kill)")
    p.add_argument("--save-maps", default="", metavar="diff,flow,foreground",
                   help="also store per-pixel maps: diff, flow (with --flow), foreground (with --background)")
    seq = p.add_argument_group("sequence features (consecutive pairs)")
    seq.add_argument("--flow", action="store_true",
                     help="dense Lucas-Kanade optical flow per pair: flow_mean, flow_p95 (pixels)")
    seq.add_argument("--flow-radius", type=_positive_int, default=7, help="flow window radius (default 7)")
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
    p.add_argument("--scheduler", default=None,
                   help="threads (default: local threads), local:N (N worker processes), cuda "
                   "(dask-cuda, a worker per GPU), or tcp://host:port of a running scheduler")
    p.add_argument("--workers", type=_positive_int, default=None, help="threads of the local scheduler")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="do part I of N (default: SLURM_ARRAY_TASK_ID/COUNT when set)")
    p.add_argument("--overwrite", action="store_true", help="delete an existing store and start again")
    p.add_argument("--log-json", action="store_true", help="progress and summary as JSON lines on stderr")
    p.add_argument("--no-progress", action="store_true", help="plain periodic lines even on a terminal")
    add_compare_options(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("dedup", help="keep only the frames where something changed (time-lapse)",
                       description="Compare each frame with the last kept frame; keep it when it changed. "
                       "Exit codes: 0 done, 1 some frames unreadable (recorded), 2 usage/input error.")
    p.add_argument("source", help="folder, glob, .tif stack, .zarr array, video or GIF")
    p.add_argument("--out", default=None, metavar="STORE.zarr", help="write every decision to a (resumable) store")
    p.add_argument("--explain", action="store_true", help="print each frame's decision, score and reason")
    p.add_argument("--json", action="store_true", help="print each decision as a JSON line")
    p.add_argument("--component", default=None, help="array path inside a Zarr store")
    p.add_argument("--chunk", type=_positive_int, default=64, help="frames per store chunk")
    p.add_argument("--workers", type=_positive_int, default=None, help="parallel tasks (default: CPU count)")
    p.add_argument("--overwrite", action="store_true", help="delete an existing store and start again")
    add_dedup_options(p)
    p.set_defaults(func=_cmd_dedup)

    p = sub.add_parser("watch", help="decide each new snapshot in a folder as it lands",
                       description="Poll FOLDER; each complete new image is compared with the last kept one and "
                       "copied to --keep-dir when it changed. State is kept on disk: a restart continues.")
    p.add_argument("folder", help="the folder the camera writes into (never modified)")
    p.add_argument("--state", default=None, help="state file (default KEEP_DIR/.gpudiff-watch.json)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between polls (default 2)")
    p.add_argument("--settle", type=float, default=1.0,
                   help="a file is complete once unchanged for this many seconds (default 1)")
    p.add_argument("--once", action="store_true", help="decide what is there now and exit (cron)")
    add_dedup_options(p)
    p.set_defaults(func=_cmd_watch)

    p = sub.add_parser("status", help="done / failed / pending of a result store, and what failed")
    p.add_argument("store", help="a result store (results.zarr) made by gpudiff run")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("export", help="one row per item as CSV (stdout) or Parquet")
    p.add_argument("store", help="a result store (results.zarr) made by gpudiff run")
    p.add_argument("--format", choices=("csv", "parquet"), default="csv",
                   help="csv (to stdout or -o FILE) or parquet (needs -o FILE and pyarrow)")
    p.add_argument("-o", "--output", default=None, help="output file (CSV default: stdout)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("demo", help="run the main job on an embedded default (no data needed)",
                       description="Generate a short time-lapse from the bundled sample and run the batch "
                       "pipeline on it (local Dask, local Zarr store, NumPy without a GPU).")
    p.add_argument("--out", default="gpudiff-demo", help="folder for the sample data and the result store")
    p.add_argument("--pair", action="store_true", help="show one pairwise comparison instead of a batch")
    p.add_argument("--backend", choices=("auto", "numpy", "cupy", "emulated-gpu"),
                   default=os.environ.get("GPUDIFF_BACKEND", "auto") or "auto",
                   help="auto takes the GPU when CuPy finds one (env GPUDIFF_BACKEND); emulated-gpu runs the GPU code path on the CPU (slow)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("warmup", help="compile the CPU kernels ahead (a fresh install's first run is then fast)",
                       description="Compile every common numba kernel signature once into numba's disk cache "
                       "(scripts/_venv.sh runs this after installing). Takes a minute or two once.")
    p.add_argument("--quiet", action="store_true", help="print only the last line")
    p.set_defaults(func=_cmd_warmup)
    from ._report import register_cli as _register_report  # noqa: PLC0415

    _register_report(sub)
    parser.subcommands = dict(sub.choices)
    return parser


def main(argv=None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 usage/input errors)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        return int(exc.code or 0)
    try:
        if getattr(args, "config", None):
            # Config values become the defaults; flags given on the command line still win.
            parser.subcommands[args.command].set_defaults(**load_config(args.config))
            args = parser.parse_args(argv)
        return int(args.func(args))
    except GpudiffError as exc:
        print(f"gpudiff {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except MemoryError:
        print(f"gpudiff {args.command}: error: out of memory: use smaller images, --metrics to compute "
              "less, or a machine with more memory", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `gpudiff export ... | head`: the reader left, which is fine
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep Python's exit flush quiet
        except OSError:
            pass
        return EXIT_OK
    except KeyboardInterrupt:
        print(f"gpudiff {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: say so in one line, keep the traceback behind a switch
        if os.environ.get("GPUDIFF_DEBUG"):
            raise
        print(f"gpudiff {args.command}: internal error: {type(exc).__name__}: {_one_line(exc)} "
              "(a bug: please report it; GPUDIFF_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 3


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
