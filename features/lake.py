"""The event lake: every event ``/events`` accepts, kept in canonical form before it is acknowledged, for the next
``nbo features``.

Layout under ``HOME/lake``:

- ``incoming/HOST-PID-NS.jsonl``: one append-only segment per writing process (no two processes write one file),
  one canonical event per line (ts in ISO 8601 UTC). A batch is one ``write``; with ``NBO_SYNC=full`` it is synced
  to disk before the answer. A line cut short by a crash was never acknowledged: readers skip it.
- ``compacting/``: segments a compaction took; one that died leaves them there and the next one finishes them.
- ``date=YYYY-MM-DD/events.parquet``: the compacted events of one UTC day (by ts), unique by event_id.
- ``lake.lock``: compactions and erasures hold it exclusively (one at a time), readers shared.

A writer locks its segment (flock) around each append and first checks that the segment is still at its path; a
compaction (or an erasure) locks a segment before it moves (or rewrites) it. A writer whose segment was taken opens
a new one, so no append lands in a file already read. Compaction removes the segments it compacted; partitions older
than ``$NBO_LAKE_RETENTION_DAYS`` (730 by default) before the newest one are deleted.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq

from features.ingest import EVENTS_ARROW
from features.privacy import find_erased
from features.sqlite import sync_level
from nbo.config import Paths
from nbo.settings import read_setting

SEGMENTS = "*.jsonl"
PARTITIONS = "date=*/*.parquet"
PARTITION_FILE = "events.parquet"
RETENTION_DAYS = 730
_NAMES = EVENTS_ARROW.names
_NUMERIC = {"amount", "quantity"}
_JSON_OPTIONS = pj.ParseOptions(explicit_schema=EVENTS_ARROW, unexpected_field_behavior="ignore")


def retention_days() -> int:
    """How many days of partitions a compaction keeps before the newest one ($NBO_LAKE_RETENTION_DAYS)."""
    return read_setting("lake_retention_days")


def encode_events(events: pd.DataFrame) -> bytes:
    """Canonical events (as validation returns them) as JSON lines, in their order."""
    columns: list[list] = []
    for name in _NAMES:
        values = events[name]
        if name == "ts":
            micros = values.dt.as_unit("us").array.asi8.view("datetime64[us]")
            columns.append([f"{t}Z" for t in np.datetime_as_string(micros, unit="us").tolist()])
        elif name in _NUMERIC:
            columns.append([None if v != v else v for v in values.to_numpy("float64", na_value=np.nan).tolist()])
        else:
            columns.append(values.to_numpy(object, na_value=None).tolist())
    return "".join(json.dumps(dict(zip(_NAMES, row)), ensure_ascii=False) + "\n" for row in zip(*columns)).encode()


def decode_events(data: bytes) -> pa.Table:
    """The events of a segment's bytes; a last line without its line break (a write cut short) is left out."""
    end = data.rfind(b"\n") + 1
    if not end:
        return EVENTS_ARROW.empty_table()
    return pj.read_json(io.BytesIO(data[:end]), parse_options=_JSON_OPTIONS)


def _same_file(fd: int, path: Path) -> bool:
    """Whether path still names the open file fd (not moved away or replaced)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _sync_dir(folder: Path) -> None:
    """Make a folder's new, renamed or removed entries durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LakeWriter:
    """The append-only segment of this process (threads take turns)."""

    def __init__(self, lake: Path) -> None:
        self.incoming = lake / "incoming"
        self.turn = threading.Lock()
        self.fd: int | None = None
        self.path: Path | None = None
        self.pid = 0

    def append(self, events: pd.DataFrame) -> int:
        """Append canonical events, synced to disk with NBO_SYNC=full; return how many. On an error nothing of the
        batch stays in the segment."""
        if events.empty:
            return 0
        data = encode_events(events)
        with self.turn:
            fd = self._locked_segment()
            try:
                size = os.lseek(fd, 0, os.SEEK_END)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    if sync_level() == "FULL":
                        os.fsync(fd)
                except OSError:
                    os.ftruncate(fd, size)
                    raise
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        return len(events)

    def _locked_segment(self) -> int:
        """This process's segment, locked; a new one when a compaction or an erasure took the last one."""
        while True:
            if self.fd is not None and self.path is not None and self.pid == os.getpid():
                fd, path = self.fd, self.path
            else:  # the first segment, or a forked child's own
                fd, path = self._open()
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_file(fd, path):
                return fd
            os.close(fd)  # closing releases the lock
            self.fd = None

    def _open(self) -> tuple[int, Path]:
        """A new segment of this process, open for appending: its descriptor and path."""
        if self.fd is not None:
            os.close(self.fd)
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.pid = os.getpid()
        self.path = self.incoming / f"{socket.gethostname()}-{self.pid}-{time.time_ns()}.jsonl"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o640)
        if sync_level() == "FULL":
            _sync_dir(self.incoming)
        return self.fd, self.path


_writers: dict[Path, LakeWriter] = {}
_writers_lock = threading.Lock()


def append_to_lake(paths: Paths, events: pd.DataFrame) -> int:
    """Keep canonical events in the home's lake (this process's segment); return how many."""
    with _writers_lock:
        writer = _writers.setdefault(paths.lake, LakeWriter(paths.lake))
    return writer.append(events)


@contextmanager
def lake_lock(lake: Path, exclusive: bool) -> Iterator[None]:
    """The lake's lock: exclusive for compactions and erasures, shared for readers."""
    lake.mkdir(parents=True, exist_ok=True)
    with open(lake / "lake.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield


def segment_files(lake: Path) -> list[Path]:
    """The segments not compacted yet, oldest first: those a compaction took, then the incoming ones."""
    return sorted((lake / "compacting").glob(SEGMENTS)) + sorted((lake / "incoming").glob(SEGMENTS))


def partition_files(lake: Path) -> list[Path]:
    """The compacted partitions, by day."""
    return sorted(lake.glob(PARTITIONS))


def read_segments(files: list[Path]) -> pa.Table:
    """The events of segments, in order (a segment may still be growing: complete lines only)."""
    tables = [decode_events(path.read_bytes()) for path in files if path.exists()]
    return pa.concat_tables(tables) if tables else EVENTS_ARROW.empty_table()


def first_occurrences(table: pa.Table) -> pa.Table:
    """The rows whose event_id did not come earlier in the table."""
    if table.num_rows < 2:
        return table
    repeated = pd.Series(table["event_id"].to_numpy(zero_copy_only=False)).duplicated().to_numpy()
    return table.filter(pa.array(~repeated)) if repeated.any() else table


def _flat(ids: pa.ChunkedArray | pa.Array) -> pa.Array:
    return ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids


def known_ids(ids: pa.ChunkedArray | pa.Array, among: pa.ChunkedArray | pa.Array) -> pa.Array:
    """The ids that are also among ``among`` (a set lookup per id of ``ids``; ``among`` should be the small side)."""
    ids = _flat(ids)
    return ids.filter(pc.is_in(ids, value_set=_flat(among))) if len(ids) and len(among) else ids.slice(0, 0)


def without_ids(table: pa.Table, ids: pa.ChunkedArray | pa.Array) -> pa.Table:
    """The rows whose event_id is not among ids."""
    if not len(ids) or not table.num_rows:
        return table
    return table.filter(pc.invert(pc.is_in(table["event_id"], value_set=_flat(ids))))


def read_lake_table(paths: Paths, columns: list[str] | None = None) -> pa.Table:
    """The lake's events as an Arrow table (canonical types), each event_id once: partitions first, then the
    segments in order (first occurrence wins)."""
    lake = paths.lake
    wanted = list(columns or _NAMES)
    if not lake.exists():
        return EVENTS_ARROW.empty_table().select(wanted)
    with lake_lock(lake, exclusive=False):
        parts = [
            pq.read_table(p, columns=["event_id", *[c for c in wanted if c != "event_id"]])
            for p in partition_files(lake)
        ]
        pending = first_occurrences(read_segments(segment_files(lake)))
    pending = pending.select(parts[0].column_names) if parts else pending
    stored = pa.concat_tables(parts) if parts else pending.schema.empty_table()
    if pending.num_rows and stored.num_rows:
        pending = without_ids(pending, known_ids(stored["event_id"], pending["event_id"]))
    return pa.concat_tables([stored, pending]).select(wanted)


def read_lake(paths: Paths, columns: list[str] | None = None) -> pd.DataFrame:
    """The lake's canonical events as a frame, each event_id once."""
    return read_lake_table(paths, columns).to_pandas()


def _take_segments(lake: Path) -> None:
    """Move the incoming segments to compacting/, each under its lock (a writer then opens a new one)."""
    taken = lake / "compacting"
    taken.mkdir(exist_ok=True)
    for path in sorted((lake / "incoming").glob(SEGMENTS)):
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_file(fd, path):
                os.rename(path, taken / path.name)
        finally:
            os.close(fd)


def _write_partition(path: Path, table: pa.Table) -> None:
    """Write a partition file beside its place, sync it, then put it in place atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _sync_dir(path.parent)


def _merge_into_partition(lake: Path, day: str, rows: pa.Table) -> int:
    """Add the rows whose event_id the day's partition lacks; return how many."""
    path = lake / f"date={day}" / PARTITION_FILE
    existing = pq.read_table(path).cast(EVENTS_ARROW) if path.exists() else EVENTS_ARROW.empty_table()
    rows = without_ids(rows, known_ids(existing["event_id"], rows["event_id"]))
    if rows.num_rows:
        _write_partition(path, pa.concat_tables([existing, rows]))
    return rows.num_rows


def _expire(lake: Path, keep_days: int) -> list[str]:
    """Delete the partitions more than keep_days older than the newest; return their days."""
    days = sorted(p.name.removeprefix("date=") for p in lake.glob("date=*") if p.is_dir())
    if not days:
        return []
    oldest = (pd.Timestamp(days[-1]) - pd.Timedelta(days=keep_days)).date().isoformat()
    expired = [d for d in days if d < oldest]
    for day in expired:
        shutil.rmtree(lake / f"date={day}")
    return expired


def compact_lake(paths: Paths) -> dict[str, object]:
    """Compact the segments into the day partitions (each event_id once, erased customers left out), remove them,
    and expire partitions past the retention. Return the segments, events added, partitions touched and expired."""
    lake = paths.lake
    if not lake.exists():
        return {"segments": 0, "events": 0, "partitions": [], "expired": []}
    with lake_lock(lake, exclusive=True):
        _take_segments(lake)
        segments = sorted((lake / "compacting").glob(SEGMENTS))
        pending = first_occurrences(read_segments(segments))
        erased = find_erased(paths, pending.select(["ts", "customer_id", "anonymous_id"]).to_pandas())
        pending = pending.filter(pa.array(~erased)) if erased.any() else pending
        days = pc.strftime(pending["ts"], format="%Y-%m-%d")
        added = {
            day: _merge_into_partition(lake, day, pending.filter(pc.equal(days, day)))
            for day in pc.unique(days).to_pylist()
        }
        for path in segments:
            path.unlink()
        expired = _expire(lake, retention_days())
    return {"segments": len(segments), "events": sum(added.values()), "partitions": sorted(added), "expired": expired}
