"""Headless Chromium (Debian package ``chromium``) for the tests that look at a rendered page."""

from __future__ import annotations

import subprocess

CHROMIUM = "/usr/bin/chromium"

_QUIET = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--disable-default-apps"]


def run_headless(exe, profile, *args, timeout=60) -> subprocess.CompletedProcess:
    """Chromium headless with its own profile folder, none of its background traffic, and ``args``."""
    cmd = [exe, *_QUIET, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
