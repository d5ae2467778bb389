"""Worker settings read from the environment: good values pass, bad ones stop the start with the variable named."""

import pytest

from serving.runtime import reload_interval, worker_count


def test_worker_count_and_reload_interval_default_and_read_the_environment(monkeypatch):
    monkeypatch.delenv("NBO_WORKERS", raising=False)
    monkeypatch.delenv("NBO_RELOAD_SECONDS", raising=False)
    assert worker_count() == 1 and reload_interval() == 30.0
    monkeypatch.setenv("NBO_WORKERS", "2")
    monkeypatch.setenv("NBO_RELOAD_SECONDS", "0.5")
    assert worker_count() == 2 and reload_interval() == 0.5


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", ""])
def test_a_bad_worker_count_is_refused(monkeypatch, value):
    monkeypatch.setenv("NBO_WORKERS", value)
    with pytest.raises(ValueError, match="NBO_WORKERS"):
        worker_count()


@pytest.mark.parametrize("value", ["0", "-3", "soon", "nan", "inf"])
def test_a_bad_reload_interval_is_refused(monkeypatch, value):
    monkeypatch.setenv("NBO_RELOAD_SECONDS", value)
    with pytest.raises(ValueError, match="NBO_RELOAD_SECONDS"):
        reload_interval()
