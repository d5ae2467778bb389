"""Replace a folder or a file that readers may be using, in one step.

A folder is built apart (``stage_folder``), then published (``publish_folder``): the target becomes a symbolic
link to the new version, swapped by one rename, so a reader sees the old version or the new one, never a half
written or missing folder. Versions live beside the target in ``NAME.versions/``; the newest few are kept for
readers still on an older one. A file is written under a temporary name and renamed over the target.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

KEEP_VERSIONS = 3  # the published version and the two before it


def versions_folder(target: Path) -> Path:
    """Where the versions of a published folder live."""
    return target.parent / f"{target.name}.versions"


def stage_folder(target: Path) -> Path:
    """A new empty folder for the next version of target."""
    staged = versions_folder(target) / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    staged.mkdir(parents=True)
    return staged


def publish_folder(staged: Path, target: Path, keep: int = KEEP_VERSIONS) -> None:
    """Make target point at staged in one rename; older versions beyond ``keep`` are removed. A plain folder at
    target (from before versions) first moves among the versions."""
    versions = versions_folder(target)
    link = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.link"
    os.symlink(staged.relative_to(target.parent), link)
    if target.is_dir() and not target.is_symlink():
        target.rename(versions / f"00000000T000000-{uuid.uuid4().hex[:8]}")
    os.replace(link, target)
    prune_versions(versions, staged, keep)


def discard_folder(staged: Path) -> None:
    """Remove a staged version that will not be published."""
    shutil.rmtree(staged, ignore_errors=True)


def prune_versions(versions: Path, current: Path, keep: int) -> None:
    """Remove all but the newest ``keep`` versions (the current one always stays)."""
    older = sorted((p for p in versions.iterdir() if p.is_dir() and p != current), key=lambda p: p.name)
    for stale in older[: max(len(older) - (keep - 1), 0)]:
        shutil.rmtree(stale, ignore_errors=True)


def write_atomically(target: Path, write: Callable[[Path], object]) -> None:
    """Call write(path) on a temporary path beside target, then rename it over target."""
    staged = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        write(staged)
        os.replace(staged, target)
    finally:
        staged.unlink(missing_ok=True)
