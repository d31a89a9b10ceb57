"""``gpudiff report``: the subcommand's flags and handler; the page itself is :mod:`gpudiff.report`."""

from __future__ import annotations

import sys

from ..errors import EXIT_OK
from ..report import DEFAULT_MAX_POINTS, DEFAULT_TOP, build_report


def _cmd_report(args) -> int:
    from ._main import _storage_options  # noqa: PLC0415

    opts = _storage_options(args)
    r = build_report(args.store, html=args.html, png_dir=args.png, top=args.top, max_points=args.max_points,
                     rank_by=args.rank_by, **({} if opts is None else {"storage_options": opts}))
    wrote = []
    if r.html:
        wrote.append(f"{r.html} ({r.page_bytes / 1e6:.2f} MB)")
    if r.png_files:
        wrote.append(f"{len(r.png_files)} PNG files in {args.png}")
    print(f"gpudiff report: {r.n_items} items ({r.done} done, {r.failed} failed, {r.pending} pending), "
          f"{len(r.figures)} figures; wrote {' and '.join(wrote)} in {r.seconds:.1f} s", file=sys.stderr)
    for n in r.notices:
        if "cannot be opened" in n or "pending" in n:
            print(f"  note: {n}", file=sys.stderr)
    return EXIT_OK


def register_cli(subparsers):
    """Add the ``report`` subcommand to an argparse ``subparsers`` object; returns its parser.

    ``gpudiff report STORE [--html FILE] [--png DIR] [--top N] [--max-points N] [--rank-by METRIC]``;
    the handler (``func``) returns the exit code (0), and raises InputError/ConfigError (exit 2).
    """
    p = subparsers.add_parser(
        "report",
        help="plots and one self-contained HTML page from a result store",
        description="Plots from a result store: one HTML page with everything embedded (opens offline, "
        "shareable from a cluster) and/or the same figures as PNG files. Reads the store (finished or still "
        "being written); the source only for thumbnails. Exit codes: 0 written, 2 bad input (not a store, a "
        "store from a newer gpudiff, an empty store) or options.",
    )
    p.add_argument("store", help="the result store (results.zarr, or its s3:// URL)")
    p.add_argument("--html", metavar="FILE", default=None, help="write the page to FILE (e.g. report.html)")
    p.add_argument("--png", metavar="DIR", default=None, help="write the figures as PNG files into DIR")
    p.add_argument("--top", type=int, default=DEFAULT_TOP, metavar="N",
                   help=f"pairs in each thumbnail table (default {DEFAULT_TOP}; 0: no thumbnails)")
    p.add_argument("--max-points", type=int, default=DEFAULT_MAX_POINTS, metavar="N",
                   help=f"most x positions per timeline; more items are drawn as min-max buckets "
                   f"(default {DEFAULT_MAX_POINTS})")
    p.add_argument("--rank-by", default=None, metavar="METRIC",
                   help="metric ordering the thumbnail tables (default: change, mse, ... whichever is present)")
    from ._parser import add_storage_options  # noqa: PLC0415

    add_storage_options(p)
    p.set_defaults(func=_cmd_report)
    return p
