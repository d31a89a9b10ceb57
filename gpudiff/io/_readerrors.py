"""The one-line errors of reading an input file, and the cheap checks that raise them.

Every message names the file and says the fix: a path that is missing, a directory, not a regular
file, empty, or that the OS will not let us stat, open or read (:func:`_stat_file`,
:func:`_open_file`, :func:`_cannot_read`); data that is truncated or corrupt (:func:`_corrupt`);
a page out of range (:func:`_page_out_of_range`).
"""

from __future__ import annotations

import os
import stat

from ..errors import InputError


def _sci(n) -> str:
    """2500000000 -> '2.5e9', 1073741824 -> '1.07e9', 12345 -> '12345'."""
    n = int(n)
    if n < 1_000_000:
        return str(n)
    mantissa, exponent = f"{n:.3g}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _corrupt(path, fmt, exc) -> InputError:
    reason = _first_line(exc) if not isinstance(exc, str) else exc
    return InputError(
        f"{path} is truncated or corrupt ({fmt}: {reason}): re-export or copy the file again"
    )


def _cannot_read(path: str, exc: OSError, fix: str = "check the path") -> InputError:
    """The one-line error for a file the OS will not let us stat, open or read."""
    if isinstance(exc, PermissionError):
        return InputError(
            f"{path} cannot be read (permission denied): check the permissions of the file and its folders"
        )
    return InputError(f"{path} cannot be read ({_first_line(exc)}): {fix}")


def _stat_file(path: str):
    """os.stat of a path the user named, or the InputError that says what is wrong."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{path} not found: check the path") from None
    except NotADirectoryError:
        raise InputError(f"{path} not found (a parent is a file, not a folder): check the path") from None
    except OSError as exc:
        raise _cannot_read(path, exc) from None


def _open_file(path: str):
    """Open ``path`` for reading after the cheap checks; returns (file object, size in bytes)."""
    st = _stat_file(path)
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path} is a directory: give an image file (gpudiff run takes folders)")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{path} is not a regular file: give an image file")
    if st.st_size == 0:
        raise InputError(f"{path} is empty (0 bytes): the file was not written completely; export it again")
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the caller's ExitStack
    except OSError as exc:
        raise _cannot_read(path, exc) from None
    return fh, st.st_size


def _page_out_of_range(path, pages, page) -> InputError:
    plural = "page" if pages == 1 else "pages"
    return InputError(
        f"{path} has {pages} {plural}; --page {page} is out of range (use 0 to {pages - 1})"
    )
