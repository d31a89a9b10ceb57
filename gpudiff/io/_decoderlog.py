"""Decoder libraries' log records, kept off the terminal for the thread that reads.

tifffile and imagecodecs (libpng) log what they notice about a damaged file on their own loggers,
which without a handler print on stderr beside gpudiff's one-line error. A :class:`DecoderLog`
filter on such a logger collects the records of the thread inside :meth:`DecoderLog.collect`
(the reader then decides which of them make the read an error) and lets every other record pass
as usual, so a user's own logging of those libraries is not silenced.
"""

from __future__ import annotations

import contextlib
import logging
import threading


class DecoderLog(logging.Filter):
    """Collects the records of ``logger_name`` made by a thread inside :meth:`collect`."""

    def __init__(self, logger_name: str):
        super().__init__()
        self.local = threading.local()
        logging.getLogger(logger_name).addFilter(self)

    def filter(self, record):
        messages = getattr(self.local, "messages", None)
        if messages is None:
            return True
        messages.append(record.getMessage())
        return False

    @contextlib.contextmanager
    def collect(self):
        """Yield the list this thread's records go to (nothing reaches stderr); nested uses each
        get their own list."""
        saved = getattr(self.local, "messages", None)
        self.local.messages = messages = []
        try:
            yield messages
        finally:
            self.local.messages = saved
