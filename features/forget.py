"""The right to be forgotten: erase one customer from every place an NBO home keeps them (``nbo forget``,
``DELETE /customers/{customer_id}``).

The places, each counted in the answer:

- every Parquet file under the home with a customer_id or anonymous_id column (raw events, generated and
  ingested sources, the customers table, lifetime tables, training sets, campaign files), rewritten without the
  rows of the customer and of their devices (the devices whose first link is to them, as identity stitching
  attributes them);
- the online store (the backend's ``forget``) and the decision log with its outcomes (``DecisionLog.forget``, or
  the log shared by every replica in Redis: ``SharedDecisionLog.forget``);
- the event lake (features.lake): its day partitions as Parquet files above, its segments not compacted yet
  rewritten without the customer's and devices' events (under the lake's lock: no compaction meanwhile);
- every CSV file under the home (quarantine files), rewritten without the rows that mention the customer's id
  or one of their devices' ids;
- the privacy register (features.privacy) then lists the customer and devices, as digests, so that a later
  ingest or build leaves their past events out.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.identity import link_devices
from features.lake import lake_lock, read_lake_table, segment_files
from features.privacy import opened_register
from nbo.config import Paths

if TYPE_CHECKING:
    from features.store_interface import FeatureStore
    from serving.decisions import DecisionLog
    from serving.shared_log import SharedDecisionLog

ID_COLUMNS = ("customer_id", "anonymous_id")


def event_files(paths: Paths) -> list[Path]:
    """The raw event files of a home: raw/events.parquet and raw/events/*.parquet."""
    return [p for p in [paths.raw / "events.parquet"] if p.exists()] + sorted((paths.raw / "events").glob("*.parquet"))


def linked_devices(paths: Paths, customer_id: str) -> set[str]:
    """The devices the raw events link first to the customer (their anonymous events are the customer's)."""
    both = []
    tables = [pq.read_table(path, columns=["ts", *ID_COLUMNS]) for path in event_files(paths)]
    for table in [*tables, read_lake_table(paths, ["ts", *ID_COLUMNS])]:
        seen = pc.and_(pc.is_valid(table["customer_id"]), pc.is_valid(table["anonymous_id"]))
        both.append(table.filter(seen).to_pandas())
    if not both:
        return set()
    events = pd.concat(both, ignore_index=True)
    theirs = events.loc[events["customer_id"].astype(str) == customer_id, "anonymous_id"].astype(str).unique()
    events = events[events["anonymous_id"].astype(str).isin(theirs)]
    links = link_devices(events.astype({"customer_id": str, "anonymous_id": str}))
    return set(links.loc[links["customer_id"] == customer_id, "anonymous_id"])


def _matching_rows(table: pa.Table, customer_id: str, devices: set[str]) -> pa.ChunkedArray | None:
    """A mask of the table's rows of the customer or of one of the devices (None: no column to match)."""
    mask = None
    for column, values in (("customer_id", [customer_id]), ("anonymous_id", sorted(devices))):
        if column in table.column_names and values:
            text = pc.cast(table[column], pa.string())
            hit = pc.fill_null(pc.is_in(text, value_set=pa.array(values, pa.string())), False)
            mask = hit if mask is None else pc.or_(mask, hit)
    return mask


def _redictionary(table: pa.Table) -> pa.Table:
    """Dictionary columns re-encoded from the values left (a filter keeps the whole dictionary, erased ids too)."""
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            values = pc.cast(table.column(i), field.type.value_type)
            table = table.set_column(i, field, pc.dictionary_encode(values).cast(field.type))
    return table


def _replace(path: Path, write) -> None:
    """Write a new version of a file beside it, then put it in place atomically."""
    tmp = path.with_name(path.name + ".forget.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def erase_parquet(path: Path, customer_id: str, devices: set[str]) -> int:
    """Rewrite a Parquet file without the rows of the customer and their devices; return how many went."""
    if not set(ID_COLUMNS) & set(pq.read_schema(path).names):
        return 0
    table = pq.read_table(path)
    mask = _matching_rows(table, customer_id, devices)
    erased = 0 if mask is None else pc.sum(mask).as_py() or 0
    if erased:
        kept = _redictionary(table.filter(pc.invert(mask)))
        _replace(path, lambda tmp: pq.write_table(kept, tmp))
    return erased


def erase_csv(path: Path, ids: list[str]) -> int:
    """Rewrite a CSV file without the rows that mention one of the ids (as a whole word, in any cell); the
    header stays. Return how many rows went."""
    mention = re.compile("|".join(rf"(?<!\w){re.escape(i)}(?!\w)" for i in ids))
    with open(path, newline="") as source:
        rows = list(csv.reader(source))
    kept = rows[:1] + [r for r in rows[1:] if not any(mention.search(cell) for cell in r)]
    if len(kept) < len(rows):

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as out:
                csv.writer(out, lineterminator="\n").writerows(kept)

        _replace(path, write)
    return len(rows) - len(kept)


def erase_from_segment(path: Path, customer_id: str, devices: set[str]) -> int:
    """Rewrite a segment without the events of the customer and their devices, under its lock (its writer then
    opens a new one); return how many went."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # no append meanwhile (the caller holds the lake's lock: no compaction)
        data = path.read_bytes()
        lines = data[: data.rfind(b"\n") + 1].splitlines(keepends=True)
        kept = [line for line in lines if not _mentions(json.loads(line), customer_id, devices)]
        if len(kept) < len(lines):
            tmp = path.with_name(f".{path.name}.forget")
            tmp.write_bytes(b"".join(kept))
            os.replace(tmp, path)
        return len(lines) - len(kept)
    finally:
        os.close(fd)


def _mentions(event: dict, customer_id: str, devices: set[str]) -> bool:
    return event.get("customer_id") == customer_id or event.get("anonymous_id") in devices


def forget_customer(
    paths: Paths,
    customer_id: str,
    store: FeatureStore,
    log: DecisionLog | SharedDecisionLog,
    now: pd.Timestamp | None = None,
) -> dict[str, int]:
    """Erase a customer from the home, the online store and the decision log; list them in the privacy
    register. Return the rows (or keys) erased per place: "online store", "decision log", and each file by its
    path under the home (files with nothing of theirs are not listed)."""
    devices = linked_devices(paths, customer_id)
    store_erased, store_devices = store.forget(customer_id)
    devices |= set(store_devices)
    with opened_register(paths) as register:
        register.record_erasure(customer_id, devices, now or pd.Timestamp.now(tz="UTC"))
    counts = {"online store": store_erased, "decision log": log.forget(customer_id)}
    with lake_lock(paths.lake, exclusive=True):  # no compaction meanwhile
        for path in sorted(paths.home.rglob("*.parquet")):
            counts[str(path.relative_to(paths.home))] = erase_parquet(path, customer_id, devices)
        for path in segment_files(paths.lake):
            counts[str(path.relative_to(paths.home))] = erase_from_segment(path, customer_id, devices)
    for path in sorted(paths.home.rglob("*.csv")):
        counts[str(path.relative_to(paths.home))] = erase_csv(path, [customer_id, *sorted(devices)])
    return {place: n for place, n in counts.items() if n or place in ("online store", "decision log")}
