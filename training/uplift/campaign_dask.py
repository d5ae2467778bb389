"""`nbo campaign --dask`: the campaign scored in customer partitions on a Dask cluster.

Each task reads a run of row groups of the customers' Parquet files, scores its customers' best offers with
training.uplift.campaign (``score_best_offers``), leaves out the global control group and writes them as one
Parquet part; it answers its counts and its largest positive expected values. The budget then selects k =
floor(budget x eligible) customers: the k-th largest of those values is a threshold every chosen row reaches, so a
second pass reads only the rows at or above it from each part (every row when the best single offer goes to a
random share) and the targeting guard (``choose_campaign``) chooses among them. The parts are contiguous runs of
the customers table read in its order, so ties fall as in one process: the selection is the single-process one.

Workers read the customers' files and the home (opt-outs) and write the parts: on a cluster of several machines,
those paths must be shared storage.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from features.privacy import drop_opted_out
from nbo.config import get_paths
from serving.rules import ControlGroup
from training.uplift.campaign import leave_out_control, score_best_offers
from training.uplift.guard import choose_campaign, read_targeting
from training.uplift.model import UpliftModel, join_customers
from training.uplift.train import UPLIFT_FOLDER

PARTITION_ROWS = 1_000_000  # customers per task (row groups are never split)
Source = list[tuple[str, list[int]]]  # Parquet files and the row groups of each to read


@dataclass(frozen=True)
class CampaignSpec:
    """What every partition is scored with."""

    home: Path
    model: UpliftModel
    offers: pd.DataFrame
    tiers: pd.DataFrame | None
    channel: str
    now: pd.Timestamp
    segment: dict[str, str]
    control: ControlGroup


@dataclass(frozen=True)
class ScoredPart:
    """One partition's part file, its eligible customers (control group left out), those the control group held
    out, and its largest positive expected values, largest first."""

    path: Path
    eligible: int
    held_out: int
    top: np.ndarray


class DaskCampaign(NamedTuple):
    """The chosen rows, best first; eligible customers; those the control group held out; what was sent; the
    guard's decision; the scored parts."""

    chosen: pd.DataFrame
    eligible: int
    held_out: int
    sent: str
    targeting: dict
    parts: list[Path]


@contextmanager
def open_client(scheduler: str | None = None) -> Iterator[Any]:
    """A dask.distributed client: of the scheduler at this address, else of a local cluster of one worker process
    per core."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as error:
        raise ValueError("--dask needs dask.distributed: pip install 'nbo[dask]'") from error
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    cores = os.cpu_count() or 1
    with (
        LocalCluster(n_workers=cores, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        yield client


def parquet_files(source: Path) -> list[Path]:
    """The Parquet files of a table: the file itself, or the *.parquet files of a folder in name order."""
    files = sorted(source.glob("*.parquet")) if source.is_dir() else [source]
    if not files or any(f.suffix != ".parquet" or not f.exists() for f in files):
        raise ValueError(f"--dask reads customers from Parquet files; {source} holds none (convert it to Parquet)")
    return files


def plan_partitions(files: list[Path], rows: int = PARTITION_ROWS) -> tuple[list[Source], int]:
    """Consecutive row groups of the files, in table order, in runs of about ``rows`` rows; and the row count."""
    partitions: list[Source] = []
    current: Source = []
    filled = total = 0
    for path in files:
        metadata = pq.ParquetFile(path).metadata
        for group in range(metadata.num_row_groups):
            if filled >= rows:
                partitions.append(current)
                current, filled = [], 0
            if not current or current[-1][0] != str(path):
                current.append((str(path), []))
            current[-1][1].append(group)
            size = metadata.row_group(group).num_rows
            filled, total = filled + size, total + size
    return [*partitions, *([current] if current else [])], total


def score_partition(source: Source, target: Path, spec: CampaignSpec, keep: int) -> ScoredPart:
    """Score one partition's customers, write their best offers (control group left out) to target."""
    customers = pd.concat([read_groups(path, groups) for path, groups in source], ignore_index=True)
    people = drop_opted_out(get_paths(spec.home), join_customers(customers, spec.tiers))
    best, eligible = score_best_offers(  # one thread: the cluster runs a worker process a core
        spec.model, people, spec.offers, spec.channel, spec.now, spec.segment, threads=1
    )
    best, eligible, held_out = leave_out_control(best, eligible, spec.control)
    best.to_parquet(target, index=False)
    values = best["expected_value"].to_numpy()
    return ScoredPart(target, eligible, held_out, -np.sort(-values[values > 0])[:keep])


def read_groups(path: str, groups: list[int]) -> pd.DataFrame:
    """Row groups of one Parquet file, as pandas reads the file."""
    return pq.ParquetFile(path).read_row_groups(groups).to_pandas()


def selection_threshold(parts: list[ScoredPart], budget: float, by_model: bool) -> float:
    """The least expected value a chosen row can have: the k-th largest positive one over all parts (k = floor(
    budget x eligible), as select_campaign); +inf when nothing can be chosen; -inf when the guard sends the best
    single offer (every row may be drawn)."""
    if not by_model:
        return -math.inf
    chosen = int(np.floor(budget * sum(p.eligible for p in parts)))
    values = -np.sort(-np.concatenate([p.top for p in parts]))
    return float(values[min(chosen, len(values)) - 1]) if chosen and len(values) else math.inf


def read_candidates(path: Path, threshold: float) -> pd.DataFrame:
    """The rows of a part at or above the threshold, in part order."""
    best = pd.read_parquet(path)
    return best[best["expected_value"] >= threshold]


def plan_campaign_dask(
    client: Any,
    spec: CampaignSpec,
    sources: list[Path],
    budget: float,
    folder: Path,
    progress: Callable[[int, int], None] | None = None,
    rows: int = PARTITION_ROWS,
) -> DaskCampaign:
    """The campaign the guard allows over the customers in ``sources``, scored in partitions on the client's
    cluster; the parts go to ``folder`` (part-00000.parquet, ...). progress gets (partitions done, partitions)."""
    from distributed import as_completed

    partitions, total = plan_partitions([f for s in sources for f in parquet_files(s)], rows)
    if not partitions:
        raise ValueError(f"no customers in {', '.join(map(str, sources))}")
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("part-*.parquet"):
        stale.unlink()
    keep = int(np.floor(budget * total))  # no part contributes more rows than the budget can choose
    shared = client.scatter(spec, broadcast=True)
    futures = [
        client.submit(score_partition, source, folder / f"part-{i:05d}.parquet", shared, keep, pure=False)
        for i, source in enumerate(partitions)
    ]
    for done, _ in enumerate(as_completed(futures), start=1):
        if progress:
            progress(done, len(futures))
    parts: list[ScoredPart] = client.gather(futures)
    threshold = selection_threshold(parts, budget, read_targeting(spec.home / UPLIFT_FOLDER)["by_model"])
    candidates = pd.concat(client.gather([client.submit(read_candidates, p.path, threshold) for p in parts]))
    if (repeated := candidates["customer_id"].duplicated()).any():  # within a partition score_best_offers refuses
        raise ValueError(f"column 'customer_id' repeats: {candidates.loc[repeated, 'customer_id'].iloc[0]}")
    eligible, held_out = sum(p.eligible for p in parts), sum(p.held_out for p in parts)
    chosen, sent, targeting = choose_campaign(
        spec.home / UPLIFT_FOLDER,
        spec.model,
        candidates.reset_index(drop=True),
        spec.offers,
        spec.channel,
        spec.now,
        budget,
        eligible,
    )
    return DaskCampaign(chosen, eligible, held_out, sent, targeting, [p.path for p in parts])
