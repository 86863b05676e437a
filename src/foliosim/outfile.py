"""Output files that appear whole or not at all: written beside their path, renamed on success.

The one home for it: every command's outputs (pages, reports, traces, CSV/Parquet exports, counterexamples,
recordings) go through :func:`replaced_on_success`, so a full disk, an error or Ctrl-C never leaves a truncated
file, and an existing file is either untouched or replaced whole, with the mode ``open()`` would have given.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def replaced_on_success(path: str) -> Iterator[str]:
    """Yield a temporary file name in ``path``'s folder; rename it to ``path`` when the block succeeds.

    On any exception (a full disk, Ctrl-C) the temporary file is removed and an
    existing ``path`` is left as it was. Raises OSError if the folder is unusable.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        os.fchmod(fd, _mode_for(path))  # mkstemp makes 0600; give the file the mode open() would
    finally:
        os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _mode_for(path: str) -> int:
    """An existing file's permission bits, else 0666 less the umask (what open(path, "w") gives)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        mask = os.umask(0o022)
        os.umask(mask)
        return 0o666 & ~mask


def write_text(path: str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`replaced_on_success`."""
    with replaced_on_success(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)


def folder_problem(path: str) -> str | None:
    """Why ``path`` cannot be written (its folder is missing or not writable, or it is a folder), or None."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return "it is a directory"
    if not os.path.isdir(folder):
        return f"the directory {os.path.dirname(path) or '.'} does not exist"
    if not os.access(folder, os.W_OK | os.X_OK):
        return (f"the directory {os.path.dirname(path) or '.'} is not writable "
                "(permission denied or a read-only file system)")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return "the file is not writable (permission denied or a read-only file system)"
    return None
