"""A short soak of the real service with two workers: concurrent /events batches and /recommend calls get no 5xx,
and every acknowledged event is in the online store afterwards (benchmarks/soak.py runs the long one)."""

from benchmarks.soak import soak


def test_a_short_two_worker_soak_answers_no_5xx_and_loses_no_event(private_home):
    result = soak(private_home, seconds=8, batches=20, size=10, recommend=150, workers=2)
    assert result.server_errors == 0, result.figures()
    assert result.lost == 0, result.figures()
    events, decisions = result.statuses["/events"], result.statuses["/recommend"]
    assert set(events) == {200} and set(decisions) == {200}, result.figures()  # no timeouts or refusals either
    assert len(result.acknowledged) == 10 * events[200] >= 1000
    assert decisions[200] >= 900
