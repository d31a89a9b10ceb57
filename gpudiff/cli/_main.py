"""Command line: the handlers of ``gpudiff compare|run|status|export|dedup|watch|demo|warmup``
(``_cmd_<command>(args) -> int``), :func:`build_parser`, which wires each to its flags (built in
:mod:`._parser`), and :func:`main`.

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
from ..errors import EXIT_FAILED_ITEMS, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, ConfigError, GpudiffError
from ..options import CompareOptions
from ._parser import (
    _Parser,
    add_compare_parser,
    add_dedup_parser,
    add_demo_parser,
    add_export_parser,
    add_run_parser,
    add_status_parser,
    add_warmup_parser,
    add_watch_parser,
)

__all__ = ["main", "build_parser"]


def _n(count: int, word: str) -> str:
    """'1 chunk', '2 chunks'."""
    return f"{count} {word}{'' if count == 1 else 's'}"


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
    from ..sequence._motion import DEFAULT_FLOW_METHOD  # noqa: PLC0415

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
        prefetch=args.prefetch,
        shard=parse_shard(args.shard) if args.shard is not None else None,
        overwrite=args.overwrite,
        retry_failed=args.retry_failed,
        verify_on_start=True if args.verify_on_start else None,
        log_json=args.log_json,
        progress=False if args.no_progress else None,
        flow=args.flow is not None,
        flow_method=args.flow or DEFAULT_FLOW_METHOD,
        flow_radius=args.flow_radius,
        flow_check=not args.no_flow_check,
        events=args.corrupt or args.cuts,
        background=args.background,
        background_options=_background_options(args),
        event_options=None,
        storage_options=_storage_options(args),
    )
    from .. import _sigterm  # noqa: PLC0415

    _sigterm.set_phase("running")  # nothing was written before: from here, a SIGTERM is the run's to handle
    report = run(cfg, options)
    items = report.done + report.failed + report.pending
    if args.log_json:
        print(json.dumps({"event": "summary", "items": items, "done": report.done, "failed": report.failed,
                          "pending": report.pending, "elapsed_s": round(report.elapsed_s, 3),
                          "exit_code": report.exit_code, "store": args.out,
                          "findings": _run_findings(args.out, raw=True, storage_options=cfg.storage_options)}),
              file=sys.stderr)
    else:
        print(f"gpudiff run: {items} items: {report.done} done, {report.failed} failed, {report.pending} "
              f"pending ({_n(report.chunks_run, 'chunk')} run, {report.chunks_skipped} already done) in "
              f"{report.elapsed_s:.1f} s; store {args.out}", file=sys.stderr)
        warm = _warm_note(report)
        if warm:
            print(f"gpudiff run: {warm}", file=sys.stderr)
        if report.bins_note:
            print(f"gpudiff run: {report.bins_note}", file=sys.stderr)
        found = _run_findings(args.out, storage_options=cfg.storage_options)
        if found:
            print(f"gpudiff run: found {found}", file=sys.stderr)
        for item, err in report.failures[:5]:
            print(f"  item {item} failed: {err}", file=sys.stderr)
        if len(report.failures) > 5:
            print(f"  ... and {len(report.failures) - 5} more (gpudiff status {args.out})", file=sys.stderr)
        if report.failed and not report.pending:
            print("gpudiff run: fix the failed items' inputs in place, then rerun with --retry-failed to redo them",
                  file=sys.stderr)
        if report.pending:
            print("gpudiff run: interrupted; run the same command again to resume", file=sys.stderr)
        elif report.exit_code == EXIT_INTERRUPTED:
            print("gpudiff run: interrupted as the work finished; run the same command again to confirm",
                  file=sys.stderr)
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


def _storage_options(args) -> dict | None:
    """``--storage-options`` as a dict (a one-line ConfigError for bad JSON), or None (then
    ``GPUDIFF_STORAGE_OPTIONS`` is read where a URL is opened)."""
    text = getattr(args, "storage_options", None)
    if text is None:
        return None
    from ..io._remote import resolve_storage_options  # noqa: PLC0415

    return resolve_storage_options(text)


def _open_result_store(path, args):
    """``gpudiff status|export``'s store: a path, or a URL with ``--storage-options``."""
    from ..engine._store import ResultStore  # noqa: PLC0415

    opts = _storage_options(args)
    return ResultStore.open(path) if opts is None else ResultStore.open(path, storage_options=opts)


def _run_findings(out, raw: bool = False, storage_options=None):
    """The store's findings as one line (or the dict, ``raw``); empty when the store cannot say."""
    from ..engine._store import ResultStore  # noqa: PLC0415

    try:
        kw = {} if storage_options is None else {"storage_options": storage_options}
        found = ResultStore.open(out, **kw).findings()
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
                             align=args.bg_align, color=d.color, model=args.bg_model,
                             shadows=args.bg_shadows).to_dict()


def _cmd_status(args) -> int:
    if getattr(args, "verify", False):
        return _cmd_verify(args)
    store = _open_result_store(args.store, args)
    summary = store.summary()
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        print(_format_status(args.store, summary))
    return EXIT_OK


def _cmd_verify(args) -> int:
    """``gpudiff status --verify``: exit 0 when every finished chunk is complete, 1 when damaged
    chunks were found (and re-marked pending / their pass reset)."""
    from ..engine._store import ResultStore  # noqa: PLC0415
    from ..engine._verify import format_verify  # noqa: PLC0415

    opts = _storage_options(args)
    store = ResultStore.open(args.store, mode="r+", **({} if opts is None else {"storage_options": opts}))
    report = store.verify()
    if args.json:
        print(json.dumps(report, default=str))
    else:
        print(format_verify(report))
    return EXIT_OK if report["clean"] else EXIT_FAILED_ITEMS


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
    if "flow_valid" in f:
        parts.append(f"flow trusted on {100 * f['flow_valid']['mean']:.3g} % of the pixels")
    return "; ".join(parts)


def _pass_word(name: str, p: dict) -> str:
    if name == "background" and p.get("next_chunk"):
        return f"background (at chunk {p['next_chunk']} of {p['n_chunks']}, {p['items_pending']} items to go)"
    return f"{name} (not run)"


def _format_status(path, s: dict) -> str:
    head = (f"{path}: {s.get('n_items', '?')} items: {s.get('done', 0)} done, {s.get('failed', 0)} failed, "
            f"{s.get('pending', 0)} pending")
    if s.get("passes_pending"):
        head += "; passes not finished: " + ", ".join(_pass_word(k, s["passes"][k]) for k in s["passes_pending"])
        head += " (rerun the same command without --shard to finish them)"
    lines = [head]
    for k in ("created", "last_write", "rate_items_per_s", "backend", "device"):
        if s.get(k) is not None:
            lines.append(f"  {k.replace('_', ' ')}: {s[k]}")
    src = s.get("source")
    if isinstance(src, dict):
        count = f" ({src['count']} files)" if src.get("count") is not None else ""
        lines.append(f"  source: {src.get('kind', '?')} {src.get('spec', '?')}{count}")
    retried = s.get("retried")
    if isinstance(retried, dict) and retried.get("n_changed") is not None:
        n, shown = retried["n_changed"], ", ".join(retried.get("changed") or [])
        more = f" and {n - len(retried['changed'])} more" if n > len(retried.get("changed") or []) else ""
        lines.append(f"  retried: {n} changed input file{'s' if n != 1 else ''} of failed items accepted by "
                     f"--retry-failed at {retried.get('accepted')}" + (f" ({shown}{more})" if shown else ""))
    found = format_findings(s.get("findings") or {})
    if found:
        lines.append(f"  found: {found}")
    if s.get("failed") and not s.get("pending"):
        lines.append("  fix the failed items' inputs in place, then rerun the run's command with --retry-failed")
    for f in s.get("failures", [])[:20]:
        if isinstance(f, dict):
            lines.append(f"  item {f.get('item')} failed: {f.get('error')}")
        else:
            lines.append(f"  item {f[0]} failed: {f[1]}")
    return "\n".join(lines)


def _cmd_export(args) -> int:
    from ..engine._export import export_csv, export_parquet  # noqa: PLC0415

    store = _open_result_store(args.store, args)
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
                       workers=args.workers, on_decision=show,
                       **({} if args.storage_options is None else {"storage_options": _storage_options(args)}))
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
    """The ``gpudiff`` parser: each subcommand's flags (built in :mod:`._parser`) wired to the
    handler that runs it."""
    parser = _Parser(prog="gpudiff", description="How different are these two images? At archive scale.")
    parser.add_argument("--version", action="version", version=f"gpudiff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    add_compare_parser(sub).set_defaults(func=_cmd_compare)
    add_run_parser(sub).set_defaults(func=_cmd_run)
    add_dedup_parser(sub).set_defaults(func=_cmd_dedup)
    add_watch_parser(sub).set_defaults(func=_cmd_watch)
    add_status_parser(sub).set_defaults(func=_cmd_status)
    add_export_parser(sub).set_defaults(func=_cmd_export)
    add_demo_parser(sub).set_defaults(func=_cmd_demo)
    add_warmup_parser(sub).set_defaults(func=_cmd_warmup)
    from ._report import register_cli as _register_report  # noqa: PLC0415

    _register_report(sub)
    parser.subcommands = dict(sub.choices)
    return parser




def main(argv=None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 failed items, 2 usage/input errors,
    75 interrupted).

    As the process's entry (``argv`` None) of ``gpudiff run``, a SIGTERM at any point ends it with
    75, not 143: before the run starts, while it runs (it stops between items), and after it
    (see :mod:`gpudiff._sigterm`).
    """
    if argv is not None:
        return _main(argv)
    from .. import _sigterm  # noqa: PLC0415

    if sys.argv[1:2] == ["run"]:
        _sigterm.install()
    else:
        _sigterm.uninstall()
    code = _main(None)
    _sigterm.set_phase("exiting")  # from here a SIGTERM flushes and exits 75 at once
    if _sigterm.received() and code != EXIT_INTERRUPTED:
        print("gpudiff run: interrupted while finishing: rerun the same command to resume", file=sys.stderr)
        code = EXIT_INTERRUPTED
    return code


def _main(argv) -> int:
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
