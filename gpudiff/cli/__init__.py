"""The command line: ``gpudiff compare|run|status|export|report|dedup|watch|demo|warmup``.

Each subcommand is a thin wrapper over a library call; ``main(argv=None) -> int`` so tests call it.
"""

from ._main import build_parser, main

__all__ = ["main", "build_parser"]
