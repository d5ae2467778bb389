"""The point-in-time training set on Dask, partitioned by customer, equal to the pandas build.

Devices link to customers across partitions, so the links are found first, over the few events that
carry both ids. Each partition is then stitched with those links and reduced to compact signal rows, the
links add one row per device, the rows are shuffled so that every customer lives in one partition, and
each partition builds its own rows.

Each partition's build gives both tables of its customers (``features.training_set``), so the parts are
Dask delayed objects, not a Dask frame. The rows never meet on one worker (a worker that concatenates the
whole training set of 10M events runs past its memory limit): the parts are gathered one by one, or written
to Parquet by the workers that built them.
"""

from __future__ import annotations

from pathlib import Path

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
from dask.delayed import Delayed

from features.definitions import Feature
from features.identity import link_devices
from features.offline import build_from_signals, link_rows, to_signal_frame
from features.training_set import TrainingSet, write_training_set

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


def sort_training_set(training: TrainingSet, categories: list[str]) -> TrainingSet:
    """The tables in the pandas build's order: cutoff, customer, then (rows) category as listed."""
    rows, customers = training.rows, training.customers
    rank = pd.Index(categories).get_indexer(rows["category"])
    order = np.lexsort((rank, rows["customer_id"].to_numpy(), rows["cutoff"].to_numpy()))
    by_customer = np.lexsort((customers["customer_id"].to_numpy(), customers["cutoff"].to_numpy()))
    return TrainingSet(rows.iloc[order].reset_index(drop=True), customers.iloc[by_customer].reset_index(drop=True))


def training_parts(
    events: dd.DataFrame | str | Path,
    cutoffs: list[pd.Timestamp],
    horizon_days: int,
    categories: list[str],
    features: list[Feature],
    npartitions: int | None = None,
) -> list[Delayed]:
    """The training set as lazy parts, one per customer partition (``npartitions``, by default one per event
    partition), each a ``TrainingSet`` in the pandas build's order."""
    events = read_events(events)
    links = find_links(events)
    rows = events.map_partitions(text_signal_frame, links, meta=text_signal_frame(events._meta, links))
    signals = dd.concat([rows, dd.from_pandas(to_text_keys(link_rows(links)), npartitions=1)])
    by_customer = signals.shuffle("customer_id", npartitions=npartitions or events.npartitions)
    build = dask.delayed(build_from_signals, pure=True)
    return [build(part, cutoffs, horizon_days, categories, features) for part in by_customer.to_delayed()]


def build_training_set_dask(
    events: dd.DataFrame | str | Path,
    cutoffs: list[pd.Timestamp],
    horizon_days: int,
    categories: list[str],
    features: list[Feature],
    npartitions: int | None = None,
) -> TrainingSet:
    """``build_training_set`` on Dask (the current scheduler), over ``npartitions`` customer partitions,
    gathered part by part into this process."""
    parts = dask.compute(*training_parts(events, cutoffs, horizon_days, categories, features, npartitions))
    return sort_training_set(
        TrainingSet(
            pd.concat([p.rows for p in parts], ignore_index=True),
            pd.concat([p.customers for p in parts], ignore_index=True),
        ),
        categories,
    )


def write_training_set_dask(
    events: dd.DataFrame | str | Path,
    path: str | Path,
    cutoffs: list[pd.Timestamp],
    horizon_days: int,
    categories: list[str],
    features: list[Feature],
    npartitions: int | None = None,
) -> None:
    """The training set folder (``features.training_set``) written by the workers, one part per customer
    partition: no process holds more than its parts."""
    write = dask.delayed(write_training_set, pure=True)
    parts = training_parts(events, cutoffs, horizon_days, categories, features, npartitions)
    dask.compute(*[write(part, Path(path), number) for number, part in enumerate(parts)])
