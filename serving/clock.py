"""The service's clock: the system clock, or the instant named in the file at $NBO_CLOCK_FILE.

A simulation or a replay drives the service through days that are not today (benchmarks/closed_loop.py): it
writes an ISO 8601 time to that file (atomically, by rename) and every worker decides as of that time from the
next request on. The file is read again only when it changes.
"""

from __future__ import annotations

import os

import pandas as pd

from nbo.settings import env_name, read_setting

CLOCK_FILE = env_name("clock_file")
_last: tuple[str, tuple[int, int], pd.Timestamp] | None = None  # (path, (inode, mtime_ns), instant) last read


def service_now() -> pd.Timestamp:
    """Now, as the service sees it (UTC)."""
    global _last
    path = read_setting("clock_file")
    if not path:
        return pd.Timestamp.now(tz="UTC")
    stat = os.stat(path)
    changed = (stat.st_ino, stat.st_mtime_ns)  # a rename brings a new inode even within one mtime tick
    if _last is None or _last[:2] != (path, changed):
        _last = (path, changed, pd.Timestamp(open(path).read().strip()).tz_convert("UTC"))
    return _last[2]


def set_clock(path: str | os.PathLike, instant: pd.Timestamp) -> None:
    """Make the services reading `path` take `instant` as now (written whole, then renamed over the old file)."""
    staged = f"{path}.next"
    with open(staged, "w") as out:
        out.write(pd.Timestamp(instant).tz_convert("UTC").isoformat())
    os.replace(staged, path)
