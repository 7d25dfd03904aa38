"""Checks made before a run starts, so that a mistake costs a second, not a crawl.

``newsbeam ingest`` refuses to start (one line on stderr, exit code 2) when ``--output``
cannot be written, when ``--articles`` names no readable file, or when ``--feeds`` leaves
no valid feed. Without these checks the first sign would be a Beam traceback, or an
error at the very end of a run after every feed and page had been fetched.

Only local paths are checked here: for ``gs://``, ``s3://`` and other Beam filesystems
the launching machine may not hold the credentials the workers use, so the runner
reports those itself.

Example::

    from pipelines.preflight import output_problem
    output_problem("/etc/passwd")   # "--output /etc/passwd is a file, not a folder"
"""

from __future__ import annotations

import glob
import os
import sys
import tempfile
from pathlib import Path

EXIT_USAGE = 2
"""Exit code for a command line that cannot run (the convention of argparse and BSD)."""


class UsageError(SystemExit):
    """A command line that cannot run: exits with code 2; ``str()`` is the message."""

    def __init__(self, message: str):
        super().__init__(EXIT_USAGE)
        self.message = message

    def __str__(self) -> str:
        return self.message


def fail(message: str) -> UsageError:
    """Prints ``message`` as one line on stderr and returns the exception to raise."""
    line = " ".join(message.split())
    print(line, file=sys.stderr)
    return UsageError(line)


def _is_remote(path: str) -> bool:
    scheme = path.split("://", 1)[0] if "://" in path else ""
    return bool(scheme) and scheme != "file"


def _local(path: str) -> Path:
    return Path(path[len("file://"):] if path.startswith("file://") else path)


def _probe_writable(folder: Path) -> str | None:
    """None when a file can be created in ``folder`` (tried, then removed), else why."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".newsbeam-probe-"):
            pass
    except OSError as e:
        return e.strerror or str(e)
    return None


def output_problem(output: str) -> str | None:
    """Why ``--output`` cannot be used, or None.

    The folder may be missing (it is created, parents included), but the nearest
    existing ancestor must be a folder this process can write to.
    """
    if _is_remote(output):
        return None
    path = _local(output)
    if path.exists() and not path.is_dir():
        return f"--output {output} is a file, not a folder"
    existing = path if path.exists() else next(
        (p for p in path.absolute().parents if p.exists()), None)
    if existing is None:
        return f"--output {output}: no existing parent folder"
    if not existing.is_dir():
        return f"--output {output}: {existing} is a file, not a folder"
    why = _probe_writable(existing)
    if why:
        where = "" if existing == path else f" (cannot create it in {existing})"
        return f"--output {output} is not writable{where}: {why}"
    return None


def articles_problem(articles: str) -> str | None:
    """Why ``--articles`` names no readable file, or None. A glob pattern must match at
    least one file, and every file it matches must open for reading."""
    if _is_remote(articles):
        return None
    pattern = str(_local(articles))
    if glob.has_magic(pattern):
        files = sorted(glob.glob(pattern))
        if not files:
            return f"--articles {articles} matches no file"
    else:
        files = [pattern]
    for name in files:
        if not os.path.exists(name):
            return f"--articles {articles}: no such file"
        if not os.path.isfile(name):
            return f"--articles {articles}: {name} is not a file"
        try:
            with open(name, "rb") as f:
                f.read(1)
        except OSError as e:
            return f"--articles {articles}: {name} cannot be read: {e.strerror or e}"
    return None
