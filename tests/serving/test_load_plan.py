"""The serving benchmark's load plan (the asked rate, in sessions, without synchronized bursts) and how it reads the
service's own time."""

import numpy as np

from benchmarks.serving import decide_seconds, plan_sessions


def test_plan_sends_the_asked_rate_once_sessions_overlap():
    plan = plan_sessions(rate=200, seconds=25, session=10, pace=2.0, seed=1)
    assert plan.shape == (500, 10)
    assert (np.diff(plan, axis=1) >= 0).all()
    steady = ((plan >= 5) & (plan < 20)).sum() / 15
    assert 180 < steady < 220


def test_plan_has_no_grid_of_simultaneous_requests():
    times = np.sort(plan_sessions(rate=200, seconds=25, session=10, pace=2.0, seed=2).ravel())
    same_millisecond = np.unique(np.floor(times * 1000), return_counts=True)[1]
    assert same_millisecond.max() <= 4


def test_the_decision_time_is_read_from_the_server_timing_header():
    assert decide_seconds("decide;dur=1.250") == 0.00125
    assert decide_seconds("db;dur=3, decide;dur=0.5") == 0.0005
    assert np.isnan(decide_seconds(None)) and np.isnan(decide_seconds("total;dur=2"))
