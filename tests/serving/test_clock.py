"""The service's clock follows $NBO_CLOCK_FILE when set, and the system clock otherwise."""

import pandas as pd

from serving.clock import CLOCK_FILE, service_now, set_clock


def test_without_a_clock_file_now_is_the_system_clock(monkeypatch):
    monkeypatch.delenv(CLOCK_FILE, raising=False)
    before = pd.Timestamp.now(tz="UTC")
    assert before <= service_now() <= pd.Timestamp.now(tz="UTC")


def test_the_clock_file_sets_now_and_each_new_instant_is_seen_at_once(tmp_path, monkeypatch):
    clock = tmp_path / "clock"
    monkeypatch.setenv(CLOCK_FILE, str(clock))
    for day in range(3):  # written within the same mtime tick: still seen
        instant = pd.Timestamp("2025-03-01 12:00", tz="UTC") + pd.Timedelta(days=day)
        set_clock(clock, instant)
        assert service_now() == instant
    assert not (tmp_path / "clock.next").exists()
