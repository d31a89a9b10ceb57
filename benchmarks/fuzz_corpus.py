#!/usr/bin/env python3
"""A longer run of the fuzz corpus of ``tests/reliability/io/test_fuzz_corpus.py``: N mutants of the
real files in ``../shared/data`` (``tests/_fuzz.py``: byte flips, cuts at structural boundaries and
at random points, edited header fields, huge declared sizes) through ``read_image`` and
``probe_image``, printing the counts by format, mutation class and outcome.

Usage::

    python benchmarks/fuzz_corpus.py [-n 20000] [--seed 1] [--max-pixels 4194304] [--time-limit 2]
                                     [--keep DIR]

Outcomes: ``read`` (a valid array within the budget), ``refused`` (one InputError line naming the
file), and the bad ones: ``exception`` (anything else raised), ``message`` (an InputError of several
lines or not naming the file), ``noise`` (something on stderr or a warning), ``slow`` (over
``--time-limit`` seconds). The exit status is 1 when any bad outcome occurred; ``--keep DIR`` keeps
those mutants (named by index, class and format) to replay or add to the tests.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
from pathlib import Path
import resource
import sys
import tempfile
import time
import warnings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpudiff.errors import InputError  # noqa: E402
from gpudiff.io import probe_image, read_image  # noqa: E402
from tests import _fuzz  # noqa: E402


def classify(call, path, budget, limit):
    err = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stderr(err), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = call()
        except InputError as exc:
            text = str(exc)
            outcome = "refused" if "\n" not in text and str(path) in text else "message"
            detail = text
        except Exception as exc:  # noqa: BLE001
            outcome, detail = "exception", f"{type(exc).__name__}: {exc}"
        else:
            outcome, detail = "read", ""
            shape = getattr(out, "shape", None) or getattr(out, "shape", ())
            if len(shape) >= 2 and shape[0] * shape[1] > budget:
                outcome, detail = "over-budget", str(shape)
    seconds = time.perf_counter() - start
    if seconds > limit:
        outcome, detail = "slow", f"{seconds:.2f} s"
    if err.getvalue().strip() or caught:
        outcome, detail = "noise", err.getvalue().strip()[:300] + str([str(w.message) for w in caught][:3])
    return outcome, detail, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20000, help="mutants (default 20000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-pixels", type=int, default=1 << 22)
    parser.add_argument("--time-limit", type=float, default=2.0, help="seconds per read (default 2)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--keep", type=Path, help="folder to keep the mutants with a bad outcome in")
    args = parser.parse_args(argv)

    seeds = _fuzz.load_seeds(args.data)
    counts = collections.Counter()
    bad = []
    slowest = 0.0
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, m in enumerate(_fuzz.mutants(seeds, args.n, seed=args.seed)):
            path = Path(tmp) / f"m{i:06d}{m.ext}"
            path.write_bytes(m.data)
            for name, fn in (("read", read_image), ("probe", probe_image)):
                outcome, detail, seconds = classify(lambda: fn(path, max_pixels=args.max_pixels), path,
                                                    args.max_pixels, args.time_limit)
                slowest = max(slowest, seconds)
                counts[(name, m.fmt, m.kind, outcome)] += 1
                if outcome not in ("read", "refused"):
                    bad.append((i, m, name, outcome, detail))
                    if args.keep:
                        args.keep.mkdir(parents=True, exist_ok=True)
                        (args.keep / f"m{i:06d}_{m.kind}_{m.fmt.lower()}{m.ext}").write_bytes(m.data)
            path.unlink()
    wall = time.perf_counter() - t0
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    print(f"{args.n} mutants (seed {args.seed}, budget {args.max_pixels} pixels) in {wall:.1f} s; "
          f"slowest call {slowest * 1000:.0f} ms; ru_maxrss growth {growth:.0f} MiB")
    for name in ("read", "probe"):
        total = collections.Counter()
        print(f"\n{name}_image:")
        keys = sorted({(f, k) for (n, f, k, _) in counts if n == name})
        for f, k in keys:
            row = {o: c for (n, ff, kk, o), c in counts.items() if n == name and ff == f and kk == k}
            total.update(row)
            print(f"  {f:5s} {k:13s} " + "  ".join(f"{o} {c}" for o, c in sorted(row.items())))
        print("  total        " + "  ".join(f"{o} {c}" for o, c in sorted(total.items())))
    for i, m, name, outcome, detail in bad[:40]:
        print(f"BAD {name} #{i} {m.seed} {m.kind} ({m.what}): {outcome}: {detail}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
