"""The report tests' headless Chromium."""

from __future__ import annotations

import os

import pytest

from tests._browser import CHROMIUM


@pytest.fixture(scope="module")
def chromium():
    """The browser's path; the test is skipped without it, or fails with GPUDIFF_REQUIRE_BROWSER=1
    (as CI sets, so a missing browser cannot pass as a skip there)."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("GPUDIFF_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM} is missing (GPUDIFF_REQUIRE_BROWSER=1): apt-get install chromium")
        pytest.skip(f"{CHROMIUM} not installed (Debian package chromium): the browser test needs it")
    return CHROMIUM
