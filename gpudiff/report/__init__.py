"""The report: reads a result store (never recomputes a metric) and draws it.

From the bottom up:

- ``_digest``: memory-bounded digests of columns (buckets, per-bucket minimum and maximum, histograms);
- ``_plots``: the matplotlib drawings of the digests (timelines, histograms, drift);
- ``_text``: metric descriptions, labels, number formatting, HTML escaping;
- ``_figures``: a timeline and a histogram per metric, the flow figure, with their captions;
- ``_columns``: the store read one column at a time in parallel jobs, into per-metric sections;
- ``_thumbs``: thumbnails of the most and least changed pairs (the only thing read from the source);
- ``_html``: the self-contained page (inline CSS, no script, a CSP that forbids the network);
- ``_build``: :func:`build_report`, which runs the jobs and writes the page and/or PNG files.

The ``gpudiff report`` subcommand is :mod:`gpudiff.cli._report`.
"""

from ._build import DEFAULT_MAX_POINTS, DEFAULT_TOP, ReportSummary, build_report

__all__ = ["build_report", "ReportSummary", "DEFAULT_TOP", "DEFAULT_MAX_POINTS"]
