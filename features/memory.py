"""Large arrays written in full once, kept off transparent huge pages."""

from __future__ import annotations

import mmap
from typing import Literal

import numpy as np

ORDINARY_PAGES_FROM = 16 * 2**20  # bytes: larger results are kept off transparent huge pages


def empty_array(shape: tuple[int, ...], dtype: str | np.dtype, order: Literal["C", "F"] = "C") -> np.ndarray:
    """An uninitialised array, for results written in full once. A large one is mapped on ordinary pages, all at
    once: NumPy asks for transparent huge pages, and where the kernel compacts memory to find them when they are
    first touched (its ``defrag`` setting), a 2 GiB training matrix took 3-5 s of system time; page by page on
    first touch 1-2 s, mapped at once (Linux) 0.5 s."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if size < ORDINARY_PAGES_FROM:
        return np.empty(shape, dtype=dtype, order=order)
    if hasattr(mmap, "MAP_POPULATE"):  # Linux
        pages = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE)
        pages.madvise(mmap.MADV_NOHUGEPAGE)
    else:
        pages = mmap.mmap(-1, size)
    return np.ndarray(shape, dtype=dtype, buffer=pages, order=order)
