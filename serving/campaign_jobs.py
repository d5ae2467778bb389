"""Campaigns as jobs: started by one request, planned off the request path, read page by page by any worker.

Each job is a folder of the NBO home (``campaign_jobs/<job id>/``): ``state.json`` (status, counts, what was sent
and why; replaced atomically), ``results.parquet`` (the chosen rows, best first, in row groups of MAX_PAGE_SIZE)
and ``heartbeat``, whose modification time the worker owning a queued or running job renews every HEARTBEAT_S.
Every worker of the service reads every job from these files, so any one answers for any job and a restart keeps
the finished ones; a queued or running job whose heartbeat is older than STALE_S (its worker crashed or was
stopped) is reported, and recorded, failed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from nbo.config import Paths
from serving.campaign import CampaignPlan

logger = logging.getLogger("nbo.serving")
JOBS_FOLDER = "campaign_jobs"
STATE_FILE, RESULTS_FILE, HEARTBEAT_FILE = "state.json", "results.parquet", "heartbeat"
HEARTBEAT_S = 2.0
STALE_S = 30.0  # fifteen missed heartbeats: the worker is gone
MAX_PAGE_SIZE = 10_000
ROW_COLUMNS = ["customer_id", "offer_id", "uplift", "expected_value"]
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
PENDING = ("queued", "running")


def stamp(seconds: float) -> str:
    """A time of the job's life in ISO 8601, UTC."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class UnknownJob(LookupError):
    """No campaign job has this id."""


@dataclass(frozen=True)
class Page:
    """A job's state and one page of its chosen rows; next_offset is None on the last page."""

    state: dict
    rows: list[dict]
    offset: int
    next_offset: int | None


def job_folder(paths: Paths, job_id: str) -> Path:
    """The folder of a job; UnknownJob for an id that is not one this service could have made."""
    if not JOB_ID.fullmatch(job_id):
        raise UnknownJob(job_id)
    return paths.home / JOBS_FOLDER / job_id


def write_state(folder: Path, state: dict) -> None:
    """Replace a job's state file atomically: a reader sees the old state or the new one, never a torn file."""
    partial = folder / f".{STATE_FILE}.{os.getpid()}.{threading.get_ident()}"
    partial.write_text(json.dumps(state, indent=1))
    os.replace(partial, folder / STATE_FILE)


def beat(folder: Path) -> None:
    """Renew a job's heartbeat."""
    (folder / HEARTBEAT_FILE).touch()


def read_state(paths: Paths, job_id: str, now: Callable[[], float] = time.time) -> dict:
    """A job's state; a queued or running job without a heartbeat for STALE_S is recorded failed first."""
    folder = job_folder(paths, job_id)
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except FileNotFoundError:
        raise UnknownJob(job_id) from None
    if state["status"] in PENDING:
        try:
            silent = now() - (folder / HEARTBEAT_FILE).stat().st_mtime
        except FileNotFoundError:
            silent = float("inf")
        if silent > STALE_S:
            state |= {
                "status": "failed",
                "reason": f"interrupted: the worker planning it stopped (no heartbeat for {silent:.0f} s); "
                "start the campaign again",
                "finished_at": stamp(now()),
            }
            write_state(folder, state)
    return state


def create_job(paths: Paths, request: dict, now: Callable[[], float] = time.time) -> dict:
    """A new queued job for a campaign request, with its first heartbeat."""
    job_id = uuid.uuid4().hex
    folder = job_folder(paths, job_id)
    folder.mkdir(parents=True)
    beat(folder)
    state = {"job_id": job_id, "status": "queued", "reason": None, "request": request, "created_at": stamp(now())}
    write_state(folder, state)
    return state


def write_results(folder: Path, chosen: pd.DataFrame) -> None:
    """The chosen rows as Parquet, in row groups of MAX_PAGE_SIZE so that a page reads at most two of them."""
    partial = folder / f".{RESULTS_FILE}.{os.getpid()}"
    chosen[ROW_COLUMNS].reset_index(drop=True).to_parquet(partial, index=False, row_group_size=MAX_PAGE_SIZE)
    os.replace(partial, folder / RESULTS_FILE)


def run_job(paths: Paths, job_id: str, plan: Callable[[], CampaignPlan], now: Callable[[], float] = time.time) -> dict:
    """Plan a queued job: running, then done with its counts and results, or failed with the reason."""
    folder = job_folder(paths, job_id)
    state = read_state(paths, job_id) | {"status": "running", "started_at": stamp(now())}
    write_state(folder, state)
    try:
        planned = plan()
        write_results(folder, planned.chosen)
    except Exception as error:  # a bad segment value, a model that cannot score: the job says why
        logger.warning("campaign job %s failed: %s", job_id, error)
        state |= {"status": "failed", "reason": f"{type(error).__name__}: {error}", "finished_at": stamp(now())}
    else:
        state |= {
            "status": "done",
            "finished_at": stamp(now()),
            "eligible": planned.eligible,
            "control_held_out": planned.held_out,
            "selected": len(planned.chosen),
            "expected_incremental_value": float(planned.chosen["expected_value"].sum()),
            "targeting": planned.targeting,
        }
    write_state(folder, state)
    return state


def read_page(paths: Paths, job_id: str, offset: int = 0, page_size: int = 1000) -> Page:
    """A job's state and its chosen rows [offset, offset + page_size) (none until it is done)."""
    if offset < 0 or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"offset must be >= 0 and page_size in [1, {MAX_PAGE_SIZE}]")
    state = read_state(paths, job_id)
    if state["status"] != "done":
        return Page(state, [], offset, None)
    results = pq.ParquetFile(job_folder(paths, job_id) / RESULTS_FILE)
    total, groups, first_row, start = results.metadata.num_rows, [], 0, None
    for group in range(results.num_row_groups):
        rows = results.metadata.row_group(group).num_rows
        if first_row + rows > offset and first_row < offset + page_size:
            start = first_row if start is None else start
            groups.append(group)
        first_row += rows
    table = results.read_row_groups(groups) if groups else results.schema_arrow.empty_table()
    rows = table.slice(offset - (start or 0), page_size).to_pylist() if groups else []
    end = offset + len(rows)
    return Page(state, rows, offset, end if end < total else None)


class CampaignJobs:
    """One worker's campaign jobs: planned one at a time on a background thread, each heartbeat renewed until
    its job ends."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.pending: set[str] = set()
        self.lock = threading.Lock()
        self.planner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="campaign-job")
        threading.Thread(target=self.keep_beating, name="campaign-heartbeat", daemon=True).start()

    def start(self, request: dict, plan: Callable[[], CampaignPlan]) -> dict:
        """Queue a job planned by ``plan`` and answer its queued state."""
        state = create_job(self.paths, request)
        with self.lock:
            self.pending.add(state["job_id"])
        self.planner.submit(self.finish, state["job_id"], plan)
        return state

    def finish(self, job_id: str, plan: Callable[[], CampaignPlan]) -> None:
        try:
            run_job(self.paths, job_id, plan)
        finally:
            with self.lock:
                self.pending.discard(job_id)

    def keep_beating(self) -> None:
        while True:
            with self.lock:
                pending = list(self.pending)
            for job_id in pending:
                beat(job_folder(self.paths, job_id))
            time.sleep(HEARTBEAT_S)
