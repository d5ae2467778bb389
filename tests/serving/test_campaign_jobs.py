"""Campaign jobs without HTTP: queued, running, done or failed; results paged; a crashed worker's job fails."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pandas as pd
import pytest

from nbo.config import get_paths
from serving.campaign import CampaignPlan
from serving.campaign_api import job_answer
from serving.campaign_jobs import (
    MAX_PAGE_SIZE,
    STALE_S,
    CampaignJobs,
    UnknownJob,
    create_job,
    job_folder,
    read_page,
    read_state,
    run_job,
)

REQUEST = {"budget": 0.5, "channel": "email", "segment": {}}


@pytest.fixture
def paths(tmp_path):
    found = get_paths(tmp_path / "home")
    found.home.mkdir(parents=True)
    return found


def planned(rows: int) -> CampaignPlan:
    """A plan of `rows` chosen customers, best first."""
    value = np.sort(np.random.default_rng(0).random(rows))[::-1]
    chosen = pd.DataFrame(
        {
            "customer_id": [f"c{i:06d}" for i in range(rows)],
            "offer_id": "o1",
            "uplift": value / 10,
            "value": 10.0,
            "expected_value": value,
        }
    )
    return CampaignPlan(chosen, eligible=2 * rows, held_out=7, targeting="targeted by the model: it won")


def wait_until_settled(paths, job_id: str, timeout_s: float = 20) -> dict:
    deadline = time.monotonic() + timeout_s
    while (state := read_state(paths, job_id))["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, state
        time.sleep(0.05)
    return state


def test_a_job_is_queued_then_done_and_its_pages_cover_every_row_once(paths):
    jobs = CampaignJobs(paths)
    plan = planned(2 * MAX_PAGE_SIZE + 345)  # three row groups
    state = jobs.start(REQUEST, lambda: plan)
    assert state["status"] == "queued" and state["request"] == REQUEST
    done = wait_until_settled(paths, state["job_id"])
    assert done["status"] == "done" and done["reason"] is None
    assert (done["eligible"], done["control_held_out"], done["selected"]) == (2 * len(plan.chosen), 7, len(plan.chosen))
    assert done["expected_incremental_value"] == pytest.approx(plan.chosen["expected_value"].sum())
    assert done["targeting"] == plan.targeting
    seen, offset = [], 0
    while offset is not None:
        page = read_page(paths, state["job_id"], offset, 3001)  # pages straddle row groups
        assert page.offset == offset and len(page.rows) <= 3001
        seen += page.rows
        offset = page.next_offset
    assert [row["customer_id"] for row in seen] == plan.chosen["customer_id"].tolist()
    assert [row["expected_value"] for row in seen] == plan.chosen["expected_value"].tolist()
    answer = job_answer(page.state, read_page(paths, state["job_id"], 20_000, 10))
    assert answer.status_url == f"/campaign/{state['job_id']}" and answer.next_offset == 20_010
    assert [r.customer_id for r in answer.rows] == plan.chosen["customer_id"].iloc[20_000:20_010].tolist()
    assert read_page(paths, state["job_id"], len(plan.chosen), 10).rows == []


def test_a_job_that_cannot_be_planned_fails_with_the_reason(paths):
    def refuse() -> CampaignPlan:
        raise ValueError("offers lack column(s) ['value'] the uplift model was trained with")

    state = create_job(paths, REQUEST)
    failed = run_job(paths, state["job_id"], refuse)
    assert failed["status"] == "failed" and "offers lack column(s) ['value']" in failed["reason"]
    assert read_state(paths, state["job_id"]) == failed  # any worker reads the same state from the home
    page = read_page(paths, state["job_id"])
    assert page.rows == [] and page.next_offset is None


def test_a_job_whose_worker_stopped_is_reported_failed_not_running_forever(paths):
    state = create_job(paths, REQUEST)
    assert read_state(paths, state["job_id"])["status"] == "queued"
    later = time.time() + STALE_S + 5  # no heartbeat since: the worker crashed
    failed = read_state(paths, state["job_id"], now=lambda: later)
    assert failed["status"] == "failed" and failed["reason"].startswith("interrupted")
    assert json.loads((job_folder(paths, state["job_id"]) / "state.json").read_text())["status"] == "failed"


def test_a_running_job_keeps_its_heartbeat(paths, monkeypatch):
    monkeypatch.setattr("serving.campaign_jobs.HEARTBEAT_S", 0.05)
    jobs = CampaignJobs(paths)
    release = threading.Event()
    state = jobs.start(REQUEST, lambda: (release.wait(5), planned(3))[1])
    time.sleep(0.5)
    heartbeat = job_folder(paths, state["job_id"]) / "heartbeat"
    assert time.time() - heartbeat.stat().st_mtime < 0.4
    assert read_state(paths, state["job_id"])["status"] == "running"
    release.set()
    assert wait_until_settled(paths, state["job_id"])["status"] == "done"


@pytest.mark.parametrize("job_id", ["7e30927da0c7474ea60c96281874cf81", "../../etc", "ABC", ""])
def test_an_unknown_job_id_is_unknown(paths, job_id):
    with pytest.raises(UnknownJob):
        read_page(paths, job_id)


@pytest.mark.parametrize("offset, page_size", [(-1, 10), (0, 0), (0, MAX_PAGE_SIZE + 1)])
def test_pages_are_bounded(paths, offset, page_size):
    state = create_job(paths, REQUEST)
    with pytest.raises(ValueError, match="page_size"):
        read_page(paths, state["job_id"], offset, page_size)
