import pytest

from features import memory
from features.memory import ORDINARY_PAGES_FROM, empty_array


def _vm_flags(address: int) -> list[str]:
    """The kernel's flags of the mapping holding an address (Linux /proc/self/smaps)."""
    with open("/proc/self/smaps") as smaps:
        inside = False
        for line in smaps:
            head = line.split()[0]
            if "-" in head and ":" not in head:
                low, high = (int(x, 16) for x in head.split("-"))
                inside = low <= address < high
            elif inside and head == "VmFlags:":
                return line.split()[1:]
    raise AssertionError("no mapping holds the address")


@pytest.mark.skipif(not hasattr(memory.mmap, "MAP_POPULATE"), reason="Linux only")
def test_large_results_are_kept_off_huge_pages():
    rows = ORDINARY_PAGES_FROM // 4 // 10 + 1
    matrix = empty_array((rows, 10), "float32", order="F")
    matrix[:] = 1.0
    assert matrix.shape == (rows, 10) and matrix.dtype == "float32" and matrix.flags.f_contiguous
    assert float(matrix.sum(dtype="float64")) == rows * 10
    assert "nh" in _vm_flags(matrix.ctypes.data)  # no huge pages advised for it
    column = empty_array((ORDINARY_PAGES_FROM // 8,), "int64")
    assert column.flags.c_contiguous and column.flags.writeable and "nh" in _vm_flags(column.ctypes.data)
    small = empty_array((100, 10), "float32", order="F")
    assert small.shape == (100, 10) and small.flags.f_contiguous and small.flags.owndata
