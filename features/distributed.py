"""The point-in-time training set on Dask, partitioned by customer, equal to the pandas build.

Devices link to customers across partitions, so the links are found first, over the few events that
carry both ids. Each partition is then stitched with those links and reduced to compact signal rows, the
links add one row per device, the rows are shuffled so that every customer lives in one partition, and
each partition builds its own rows.

Each partition's build gives both tables of its customers (``features.training_set``), so the parts are
Dask delayed objects, not a Dask frame. The rows never meet on one worker (a worker that concatenates the
whole training set of 10M events runs past its memory limit): the parts are gathered one by one, or written
to Parquet by the workers that built them.

``build_features_dask`` is the feature stage of a home on a cluster (``nbo features --dask N``: a local one of N
worker processes, or any ``dask.distributed`` scheduler by address): the raw event files are read by the workers,
one partition per row group, and the training set folder is published with its lineage as ``nbo features`` does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as ds
from dask.delayed import Delayed

from features.definitions import FEATURES, Feature
from features.identity import link_devices
from features.ingest_catalogue import DERIVED_TABLES, read_table, supplied_files, with_item_categories
from features.lake import read_lake_table
from features.offline import build_from_signals, choose_cutoffs, link_rows, to_signal_frame
from features.privacy import drop_erased
from features.publish import publish_folder, stage_folder, write_atomically
from features.training_set import TrainingSet, plan_cutoffs, write_training_set
from nbo.config import Paths

EVENT_COLUMNS = ["ts", "customer_id", "anonymous_id", "channel", "event_type", "category", "amount", "offer_id"]


def read_events(source: dd.DataFrame | str | Path | list[Path], columns: list[str] = EVENT_COLUMNS) -> dd.DataFrame:
    """Events as a Dask frame: the one given, or the columns features need from Parquet files (a folder, a file
    or a list of files), one partition per row group."""
    if isinstance(source, dd.DataFrame):
        return source
    files = [str(f) for f in source] if isinstance(source, list) else str(source)
    return dd.read_parquet(files, columns=columns, split_row_groups=True)


def linking_events(events: dd.DataFrame) -> dd.DataFrame:
    """The events that carry both ids (a device and its customer), the columns links need."""
    both = events[events["customer_id"].notnull() & events["anonymous_id"].notnull()]
    return both[["anonymous_id", "customer_id", "ts"]]


def partial_links(events: pd.DataFrame) -> pd.DataFrame:
    """Each device's first link within a part of the events, as linking events (anonymous_id, customer_id, ts):
    the links of the whole history are the first of the parts' first links."""
    return link_devices(events).rename(columns={"linked_at": "ts"})


def link_parts(events: dd.DataFrame) -> list[Delayed]:
    """The parts' first links, to be gathered one by one (a third of the events carry both ids: gathered whole,
    100M events' worth ran a worker out of memory)."""
    return [dask.delayed(partial_links, pure=True)(part) for part in linking_events(events).to_delayed()]


def join_links(parts: list[pd.DataFrame] | tuple[pd.DataFrame, ...]) -> pd.DataFrame:
    """The device links of the whole history from the parts' first links."""
    return link_devices(pd.concat(parts, ignore_index=True))


def find_links(events: dd.DataFrame) -> pd.DataFrame:
    """Device links of the whole history, computed from the events that carry both ids."""
    return join_links(dask.compute(*link_parts(events)))


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
    links: pd.DataFrame | None = None,
) -> list[Delayed]:
    """The training set as lazy parts, one per customer partition (``npartitions``, by default one per event
    partition), each a ``TrainingSet`` in the pandas build's order (``links``: the device links, when known)."""
    events = read_events(events)
    links = find_links(events) if links is None else links
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
    links: pd.DataFrame | None = None,
) -> None:
    """The training set folder (``features.training_set``) written by the workers, one part per customer
    partition: no process holds more than its parts (``links``: as in ``training_parts``)."""
    write = dask.delayed(write_training_set, pure=True)
    parts = training_parts(events, cutoffs, horizon_days, categories, features, npartitions, links)
    dask.compute(*[write(part, Path(path), number) for number, part in enumerate(parts)])


@contextmanager
def connect_cluster(workers: int, scheduler: str | None = None, worker_memory: str = "auto") -> Iterator[object]:
    """A ``dask.distributed`` client: to the scheduler at ``scheduler``'s address, else to a local cluster of
    ``workers`` single-threaded worker processes of ``worker_memory`` each; closed on exit."""
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, memory_limit=worker_memory) as cluster,
        Client(cluster) as client,
    ):
        yield client


def raw_event_files(paths: Paths) -> list[Path]:
    """The raw event files the Dask build reads; an error naming what it cannot read (events only in the event
    lake, tables not yet supplied or derived)."""
    files = [p for p in [paths.raw / "events.parquet"] if p.exists()] + sorted((paths.raw / "events").glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no event files in {paths.raw}: run `nbo generate` or `nbo ingest` first")
    lake = read_lake_table(paths, ["event_id"]).num_rows
    if lake:
        raise ValueError(f"the event lake holds {lake:,} events the Dask build does not read: run `nbo features`")
    missing = [t for t in DERIVED_TABLES if not (supplied_files(paths, t) or (paths.raw / f"{t}.parquet").exists())]
    if missing:
        raise FileNotFoundError(
            f"no {', '.join(missing)} in {paths.raw}: ingest them, or derive them once with `nbo features`"
        )
    return files


def prepare_events(events: pd.DataFrame, paths: Paths, items: pd.DataFrame) -> pd.DataFrame:
    """One partition of raw events as the build reads them: erased people's events dropped, categories filled
    from the items, text keys."""
    events = with_item_categories(drop_erased(paths, events), items)
    return events.drop(columns="item_id").astype({"category": "str"})


def hash_partition(events: pd.DataFrame) -> pd.Series:
    """A content hash of one partition of events, for data lineage."""
    digest = hashlib.sha256(pd.util.hash_pandas_object(events, index=False).to_numpy().tobytes()).hexdigest()
    return pd.Series([digest])


def distinct_values(column: pd.Series) -> pd.Series:
    """The distinct values of one partition's column (no shuffle: the few values are joined in the caller)."""
    return pd.Series(column.dropna().unique(), dtype=column.dtype)


def build_features_dask(
    paths: Paths, n_cutoffs: int | None = None, horizon_days: int | None = None, npartitions: int | None = None
) -> dict[str, object]:
    """The feature stage's training set (``features.pipeline.build_features``) on the current Dask client, from
    the raw event files: written by the workers, published in one step with its lineage. The online store is
    not loaded here (``nbo features`` without ``--dask`` loads it)."""
    files = raw_event_files(paths)
    items = read_table(supplied_files(paths, "items") or [paths.raw / "items.parquet"])
    raw = read_events(files, [*EVENT_COLUMNS, "item_id"])
    events = raw.map_partitions(prepare_events, paths, items, meta=prepare_events(raw._meta, paths, items))
    first, last, count, named, hashes, *linking = dask.compute(  # one pass over the events
        events["ts"].min(),
        events["ts"].max(),
        events.shape[0],
        events["category"].map_partitions(distinct_values),
        events.map_partitions(hash_partition, meta=(None, "str")),
        *link_parts(events),
    )
    categories = sorted(set(items["category"].dropna().astype(str)) | set(named))
    n_cutoffs, horizon_days = plan_cutoffs(first, last, n_cutoffs, horizon_days)
    cutoffs = choose_cutoffs(pd.DataFrame({"ts": [first, last]}), n_cutoffs, horizon_days)
    staged = stage_folder(paths.training_set)
    links = join_links(linking)
    write_training_set_dask(events, staged, cutoffs, horizon_days, categories, list(FEATURES), npartitions, links)
    rows = ds.dataset(staged / "rows", format="parquet").to_table(columns=["label"])["label"]
    lineage = {
        "events": int(count),
        "rows": len(rows),
        "customer_rows": ds.dataset(staged / "customers", format="parquet").count_rows(),
        "positives": int(pc.sum(rows).as_py() or 0),
        "horizon_days": horizon_days,
        "cutoffs": [c.isoformat() for c in cutoffs],
        "events_sha256": hashlib.sha256("".join(hashes).encode()).hexdigest(),
        "lake_events": 0,
        "lake_compacted": 0,
        "built_on": "dask",
    }
    publish_folder(staged, paths.training_set)
    write_atomically(paths.training_set.with_suffix(".json"), lambda p: p.write_text(json.dumps(lineage, indent=2)))
    return lineage
