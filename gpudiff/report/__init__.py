"""The report: reads a result store (never recomputes a metric) and draws it.

- ``_page``: the HTML page and its sections, ``gpudiff report``;
- ``_plots``: the figures (timelines, histograms, drift, thumbnails), memory-bounded digests of columns.
"""

from ._page import ReportSummary, build_report

__all__ = ["build_report", "ReportSummary"]
