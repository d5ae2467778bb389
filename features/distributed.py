"""The point-in-time training set on Dask, partitioned by customer, equal to the pandas build.

Devices link to customers across partitions, so the links are found first, over the few events that
carry both ids. Each partition is then stitched with those links and reduced to compact signal rows, the
links add one row per device, the rows are shuffled so that every customer lives in one partition, and
each partition builds its own rows.

The rows never meet on one worker: ``compute`` on a Dask frame concatenates every partition on a worker
before handing the result over (with the whole training set at 10M events, past the worker's memory
limit, so the nanny restarted it again and again); the partitions are gathered one by one instead, or
written to Parquet by the workers that built them.
"""

from __future__ import annotations

from pathlib import Path

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd

from features.definitions import Feature
from features.identity import link_devices
from features.offline import build_from_signals, link_rows, to_signal_frame

EVENT_COLUMNS = ["ts", "customer_id", "anonymous_id", "channel", "event_type", "category", "amount", "offer_id"]


def read_events(source: dd.DataFrame | str | Path) -> dd.DataFrame:
    """Events as a Dask frame: the one given, or the columns features need from Parquet files, one
    partition per row group."""
    if isinstance(source, dd.DataFrame):
        return source
    return dd.read_parquet(str(source), columns=EVENT_COLUMNS, split_row_groups=True)


def find_links(events: dd.DataFrame) -> pd.DataFrame:
    """Device links of the whole history, computed from the events that carry both ids."""
    both = events[events["customer_id"].notnull() & events["anonymous_id"].notnull()]
    return link_devices(both[["anonymous_id", "customer_id", "ts"]].compute())


def to_text_keys(frame: pd.DataFrame) -> pd.DataFrame:
    """A signal frame with text customer and category columns: partitions' categories differ."""
    return frame.astype({"customer_id": "str", "category": "str"})


def text_signal_frame(events: pd.DataFrame, links: pd.DataFrame) -> pd.DataFrame:
    """``to_signal_frame`` of a part of the events, with text keys."""
    return to_text_keys(to_signal_frame(events, links))


def sort_rows(training: pd.DataFrame, categories: list[str]) -> pd.DataFrame:
    """Rows in the pandas build's order: cutoff, customer, then category as listed."""
    rank = pd.Index(categories).get_indexer(training["category"])
    order = np.lexsort((rank, training["customer_id"].to_numpy(), training["cutoff"].to_numpy()))
    return training.iloc[order].reset_index(drop=True)


def training_partitions(events: dd.DataFrame | str | Path, cutoffs: list[pd.Timestamp], horizon_days: int,
                        categories: list[str], features: list[Feature], npartitions: int | None = None) -> dd.DataFrame:
    """The training set as a lazy Dask frame of ``npartitions`` customer partitions (by default one per
    event partition), each in the pandas build's order."""
    events = read_events(events)
    links = find_links(events)
    rows = events.map_partitions(text_signal_frame, links, meta=text_signal_frame(events._meta, links))
    signals = dd.concat([rows, dd.from_pandas(to_text_keys(link_rows(links)), npartitions=1)])
    by_customer = signals.shuffle("customer_id", npartitions=npartitions or events.npartitions)
    build_args = (cutoffs, horizon_days, categories, features)
    meta = build_from_signals(signals._meta, *build_args)
    return by_customer.map_partitions(build_from_signals, *build_args, meta=meta)


def build_training_set_dask(events: dd.DataFrame | str | Path, cutoffs: list[pd.Timestamp], horizon_days: int,
                            categories: list[str], features: list[Feature],
                            npartitions: int | None = None) -> pd.DataFrame:
    """``build_training_set`` on Dask (the current scheduler), over ``npartitions`` customer partitions,
    gathered partition by partition into this process."""
    training = training_partitions(events, cutoffs, horizon_days, categories, features, npartitions)
    parts = dask.compute(*training.to_delayed())
    return sort_rows(pd.concat(parts, ignore_index=True), categories)


def write_training_set_dask(events: dd.DataFrame | str | Path, path: str | Path, cutoffs: list[pd.Timestamp],
                            horizon_days: int, categories: list[str], features: list[Feature],
                            npartitions: int | None = None) -> None:
    """The training set written by the workers to a Parquet folder, one file per customer partition:
    no process holds more than its partitions."""
    training = training_partitions(events, cutoffs, horizon_days, categories, features, npartitions)
    training.to_parquet(str(path), write_index=False)
