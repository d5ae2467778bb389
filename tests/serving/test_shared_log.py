"""The decision log shared in Redis, without HTTP: two logs on one Redis (two replicas) see each other's contacts,
decisions and outcomes; caps hold when both log at once; an outage keeps what is served; forget erases a customer."""

import shutil
import threading

import numpy as np
import pytest

from nbo.config import get_paths
from serving.decisions import DecisionLog, open_decision_log
from serving.process import free_port
from serving.rules import Policy, cap_window, within_caps
from serving.shared_log import CONTACT_HISTORY_S, SharedDecisionLog
from tests.serving.test_degraded import start_redis
from training.exposures import HORIZON_DAYS

DAY = 86_400
NOW = 1_700_000_000


def served(decision: str, customer: str, channel: str, ts: int, offers: list[str | None]) -> list[tuple]:
    return [
        (decision, ts, customer, channel, "1", 0, o, rank, 0.1, 0.5, 0.9, 0, "treatment", o)
        for rank, o in enumerate(offers)
    ]


@pytest.fixture(scope="module")
def redis_url():
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server binary not found - the shared log untested")
    port = free_port()
    server = start_redis(port)
    yield f"redis://127.0.0.1:{port}/0"
    server.kill()
    server.wait()


@pytest.fixture
def replicas(redis_url, request):
    """Two logs on one Redis under a prefix of this test's own."""
    prefix = f"test:{request.node.name}:"
    logs = [SharedDecisionLog(redis_url, prefix=prefix) for _ in range(2)]
    yield logs
    for log in logs:
        log.close()


def test_two_replicas_share_contacts_decisions_and_outcomes(replicas, make_events):
    one, two = replicas
    one.record(served("d1", "c1", "email", NOW, ["o1", "o2"]))
    two.record(served("d2", "c2", "web", NOW + 5, ["o3"]))
    assert sorted(two.contacts("c1", NOW - DAY)) == [("o1", "email", NOW), ("o2", "email", NOW)]
    assert two.contacts("c1", NOW + 1) == []
    assert one.contacted("email", NOW - DAY) == {"c1"} and one.contacted("web", NOW) == {"c2"}
    assert two.known_decisions(["d1", "d2", "nope"]) == {"d1", "d2"}
    click = make_events(
        [dict(ts="2025-01-01 10:00", customer_id="c1", event_type="offer_click", offer_id="o2", decision_id="d1")]
    )
    assert two.record_outcomes(click) == 1
    assert one.record_outcomes(click) == 0  # idempotent by event id, whichever replica gets it again
    joined = one.joined().set_index(["decision_id", "offer_id"])
    assert joined["clicked"].to_dict() == {("d1", "o1"): 0, ("d1", "o2"): 1, ("d2", "o3"): 0}
    decisions = two.decisions(since=NOW + 1)
    assert decisions["decision_id"].tolist() == ["d2"] and decisions["ts"].tolist() == [NOW + 5]
    assert two.logged_outcomes()["event_id"].tolist() == [click["event_id"].iloc[0]]


def test_numpy_values_are_logged_as_plain_numbers(replicas):
    one, two = replicas
    row = ("d-np", np.int64(NOW), "c9", "web", "1", np.int64(0), "o1", np.int64(0), np.float64(0.25), 0.5, 0.9, 0)
    one.record([(*row, "treatment", "o1")])
    logged = two.decisions().iloc[0]
    assert (logged["ts"], logged["rank"], logged["score"]) == (NOW, 0, 0.25)
    assert two.contacts("c9", 0) == [("o1", "web", NOW)]


def test_the_caps_hold_when_replicas_log_at_once(replicas):
    """Sixteen decisions for one customer's e-mail, from two replicas at once, each judged on the contacts it read:
    exactly one is logged (the cap is one e-mail a week), the others get ContactCapped."""
    start, outcomes = threading.Barrier(16), []

    def decide(i: int) -> None:
        log = replicas[i % 2]
        admit = lambda contacts: within_caps(contacts, "email", NOW + i, [f"o{i}"], Policy())  # noqa: B023
        start.wait()
        try:
            log.record(served(f"d{i}", "rushed", "email", NOW + i, [f"o{i}"]), admit=admit)
            outcomes.append("logged")
        except Exception as error:
            outcomes.append(type(error).__name__)

    threads = [threading.Thread(target=decide, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["ContactCapped"] * 15 + ["logged"]
    assert len(replicas[0].contacts("rushed", 0)) == 1 and len(replicas[1].decisions()) == 1


def test_contacts_keep_the_longest_window_and_expire(replicas):
    one, _ = replicas
    assert CONTACT_HISTORY_S >= max(cap_window(c) for c in ("email", "web")) and CONTACT_HISTORY_S >= HORIZON_DAYS * DAY
    one.record(served("old", "c1", "web", NOW, ["o1"]))
    one.record(served("new", "c1", "web", NOW + CONTACT_HISTORY_S + 1, ["o2"]))
    assert one.contacts("c1", 0) == [("o2", "web", NOW + CONTACT_HISTORY_S + 1)]  # older than the window: trimmed
    assert one.contacted("web", 0) == {"c1"}
    ttl = one.client.ttl(one.key("contacts", "c1"))
    assert 0 < ttl <= CONTACT_HISTORY_S
    assert sorted(one.decisions()["decision_id"]) == ["new", "old"]  # the log itself keeps every decision


def test_an_outage_serves_on_known_contacts_and_loses_nothing(redis_url, make_events):
    port = free_port()
    server = start_redis(port)
    url = f"redis://127.0.0.1:{port}/0"
    one, two = SharedDecisionLog(url), SharedDecisionLog(url)
    try:
        one.record(served("before", "c1", "web", NOW, ["o1"]))
        server.kill()
        server.wait()
        one.record(served("during", "c1", "web", NOW + 1, ["o2"]))  # waits in memory
        assert one.contacts("c1", 0) == [("o2", "web", NOW + 1)]  # degraded: what this replica knows
        for call in (
            lambda: two.known_decisions(["before"]),
            lambda: two.record_outcomes(
                make_events(
                    [dict(ts="2025-01-01", customer_id="c1", event_type="offer_click", offer_id="o1", decision_id="x")]
                )
            ),
            lambda: one.decisions(),
        ):
            with pytest.raises(Exception, match="shared decision log unreachable"):
                call()
        server = start_redis(port)  # empty: a Redis without persistence restarted
        one.flush()
        assert two.decisions()["decision_id"].tolist() == ["during"]
        assert two.contacts("c1", 0) == [("o2", "web", NOW + 1)]
    finally:
        one.close()
        two.close()
        server.kill()
        server.wait()


def test_decisions_served_during_an_outage_outlive_the_process(tmp_path):
    """Served while Redis is down and not written before the log closed: the spool in the home keeps them, and the
    next log opened on it writes them once Redis answers."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"  # nobody listens yet
    first = SharedDecisionLog(url, spool=DecisionLog(tmp_path / "spool.sqlite"))
    first.record(served("kept-1", "c1", "email", NOW, ["o1", "o2"]))
    first.record(served("kept-2", "c2", "web", NOW, ["o3"]))
    first.close()  # Redis still down: logs that 3 slots wait in the spool
    server = start_redis(port)
    try:
        spool = DecisionLog(tmp_path / "spool.sqlite")
        second = SharedDecisionLog(url, spool=spool)
        second.flush()
        assert sorted(second.decisions()["decision_id"]) == ["kept-1", "kept-1", "kept-2"]
        assert second.contacted("email", 0) == {"c1"} and spool.slot_rows() == []
        second.close()
    finally:
        server.kill()
        server.wait()


def test_a_full_waiting_room_refuses_decisions(make_events):
    log = SharedDecisionLog(f"redis://127.0.0.1:{free_port()}/0", max_queued=2)  # nobody listens
    try:
        log.record(served("d1", "c1", "web", NOW, ["o1", "o2"]))
        with pytest.raises(Exception, match="2 slots wait"):
            log.record(served("d2", "c1", "web", NOW, ["o3"]))
        assert log.contacts("c1", 0) == [("o1", "web", NOW), ("o2", "web", NOW)]
    finally:
        log.close()  # logs the slots it could not write


def test_forget_erases_a_customer_everywhere(replicas, make_events):
    one, two = replicas
    one.record(served("d1", "gone", "email", NOW, ["o1", "o2"]))
    two.record(served("d2", "kept", "email", NOW, ["o1"]))
    events = make_events(
        [
            dict(ts="2025-01-01", customer_id="gone", event_type="offer_click", offer_id="o1", decision_id="d1"),
            dict(
                ts="2025-01-01", customer_id="kept", event_type="purchase", offer_id="o1", decision_id="d2", amount=9.5
            ),
        ]
    )
    assert one.record_outcomes(events) == 2
    assert two.forget("gone") == 3  # two slots and one outcome
    assert one.contacts("gone", 0) == [] and one.contacted("email", 0) == {"kept"}
    assert one.known_decisions(["d1", "d2"]) == {"d2"}
    assert one.logged_outcomes()["decision_id"].tolist() == ["d2"]
    stored = b"".join(k + one.client.dump(k) for k in one.client.scan_iter(match=one.prefix + "*"))
    assert b"kept" in stored and b"gone" not in stored


def test_the_redis_url_picks_the_shared_log(redis_url, tmp_path, monkeypatch):
    paths = get_paths(tmp_path)
    monkeypatch.delenv("NBO_REDIS_URL", raising=False)
    local = open_decision_log(paths)
    assert isinstance(local, DecisionLog)
    local.close()
    monkeypatch.setenv("NBO_REDIS_URL", redis_url)
    shared = open_decision_log(paths)
    assert isinstance(shared, SharedDecisionLog)
    shared.close()


def test_nbo_forget_erases_the_customer_from_the_shared_log(redis_url, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from nbo.cli import app

    paths = get_paths(tmp_path / "home")
    paths.raw.mkdir(parents=True)
    monkeypatch.setenv("NBO_REDIS_URL", redis_url)
    log = SharedDecisionLog(redis_url)
    try:
        log.record(served("d-cli", "cli-gone", "web", NOW, ["o1", "o2"]))
        log.record(served("d-cli-kept", "cli-kept", "web", NOW, ["o1"]))
        result = CliRunner().invoke(app, ["forget", "cli-gone", "--home", str(paths.home), "--json"])
        assert result.exit_code == 0, result.output
        assert '"decision log": 2' in result.output
        assert log.known_decisions(["d-cli", "d-cli-kept"]) == {"d-cli-kept"} and log.contacts("cli-gone", 0) == []
    finally:
        log.close()


@pytest.mark.parametrize("command", [["performance"], ["evaluate", "--decisions"]])
def test_commands_reading_the_log_say_when_redis_is_down(command, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from nbo.cli import app

    monkeypatch.setenv("NBO_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # nobody listens
    result = CliRunner().invoke(app, [*command, "--home", str(tmp_path)])
    assert result.exit_code == 2 and "shared decision log unreachable" in result.output, result.output


def test_without_the_redis_extra_both_stores_name_the_extra_to_install(tmp_path, monkeypatch):
    import sys

    from features.online import open_store

    for module in ("serving.shared_log", "features.online_redis"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setitem(sys.modules, "redis", None)  # import redis fails as when the extra is not installed
    monkeypatch.setenv("NBO_REDIS_URL", "redis://127.0.0.1:6379/0")
    paths = get_paths(tmp_path)
    for open_one in (open_decision_log, open_store):
        with pytest.raises(ValueError, match=r"'redis' is not installed: pip install 'nbo\[redis\]'"):
            open_one(paths)
