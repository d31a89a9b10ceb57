"""The command line: ``gpudiff compare|run|status|export|report|dedup|watch|demo|warmup``.

Each subcommand is a thin wrapper over a library call; ``main(argv=None) -> int`` so tests call it.
``_main``: the command handlers, ``build_parser`` and ``main``; ``_parser``: the flags of every
subcommand but ``report`` (``_report`` holds its flags and handler); ``_demo``, ``_warmup``: the work
of those two commands.
"""

from ._main import build_parser, main

__all__ = ["main", "build_parser"]
