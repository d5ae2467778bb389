"""The real `bentoml serve` process, called over HTTP."""

import re
import shutil
import time

import httpx
import pandas as pd
import pytest

from nbo.config import get_paths
from serving.process import free_port, start_service, stop_service, wait_ready
from serving.rules import control_group_from_env, control_mask

KEY = "test-key-123"


@pytest.fixture(scope="module")
def service(trained_home, tmp_path_factory):
    """Two worker processes, as on a two-core machine: the kernel hands each new connection to either worker,
    so the tests below run across workers too (tests/features/test_online.py checks the sharing itself). They run
    on a private copy of the trained home: what they post (lake, store, decision log) reaches no other test."""
    paths = get_paths(tmp_path_factory.mktemp("http") / "home")
    shutil.copytree(trained_home[0].home, paths.home)
    port = free_port()
    process = start_service(
        paths, port, tmp_path_factory.mktemp("logs") / "service.log", env={"NBO_API_KEY": KEY, "NBO_WORKERS": "2"}
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, url, timeout_s=120)
        yield url, paths
    finally:
        stop_service(process)


def test_recommend_over_http_for_a_known_and_an_unknown_customer(service):
    url, paths = service
    from features.online import open_store

    known = open_store(paths).customers()[0]
    answer = httpx.post(f"{url}/recommend", json={"customer_id": known, "channel": "web", "k": 2}, timeout=10)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["customer_id"] == known and body["fallback"] is False and body["model_version"]
    assert 1 <= len(body["offers"]) <= 2
    assert set(body["offers"][0]) == {"offer_id", "score", "expected_value", "reason"}
    timing = re.fullmatch(r"decide;dur=(\d+\.\d{3})", answer.headers.get("server-timing", ""))
    assert timing and 0 < float(timing.group(1)) < 10_000, answer.headers  # the decision's own milliseconds
    unknown = httpx.post(f"{url}/recommend", json={"customer_id": "nobody-yet", "channel": "web"}, timeout=10)
    assert unknown.status_code == 200 and unknown.json()["fallback"] is True


@pytest.mark.parametrize(
    "body, field",
    [
        ({"channel": "web"}, "customer_id"),
        ({"customer_id": "c1", "channel": "fax"}, "channel"),
        ({"customer_id": "c1", "channel": "web", "k": 0}, "k"),
        ({"customer_id": "c1", "channel": "web", "context": {"cart_items": "i1"}}, "cart_items"),
    ],
)
def test_malformed_bodies_get_a_4xx_naming_the_field(service, body, field):
    url, _ = service
    answer = httpx.post(f"{url}/recommend", json=body, timeout=10)
    assert 400 <= answer.status_code < 500
    assert field in answer.text


def test_a_live_product_view_changes_the_next_recommendation(service):
    url, paths = service
    from features.online import open_store

    customer = open_store(paths).customers()[3]
    ask = lambda: httpx.post(
        f"{url}/recommend", json={"customer_id": customer, "channel": "web", "k": 20}, timeout=10
    ).json()
    before = ask()
    offers = pd.read_parquet(paths.raw / "offers.parquet").set_index("offer_id")["category"]
    scores = lambda body: {offers[o["offer_id"]]: o["score"] for o in body["offers"]}
    category = list(scores(before))[-1]
    now = pd.Timestamp.now(tz="UTC")
    views = [
        {
            "ts": (now - pd.Timedelta(seconds=s)).isoformat(),
            "customer_id": customer,
            "channel": "web",
            "event_type": "product_view",
            "category": category,
        }
        for s in (5, 4, 3)
    ]
    sent = httpx.post(f"{url}/events", json={"events": views}, headers={"x-api-key": KEY}, timeout=10)
    assert sent.status_code == 200, sent.text
    assert sent.json() == {"accepted": 3, "duplicates": 0, "conflicts": 0, "rejected": []}
    again = httpx.post(f"{url}/events", json={"events": views}, headers={"x-api-key": KEY}, timeout=10)
    assert again.json()["accepted"] == 0 and again.json()["duplicates"] == 3
    assert scores(ask())[category] > scores(before)[category]


def test_an_event_id_resent_with_other_content_is_a_conflict_and_quarantined(service):
    url, paths = service
    event = {
        "event_id": "conflict-1",
        "ts": "2025-01-01T00:00:00Z",
        "customer_id": "c1",
        "channel": "web",
        "event_type": "page_view",
    }
    send = lambda rows: httpx.post(f"{url}/events", json={"events": rows}, headers={"x-api-key": KEY}, timeout=10)
    assert send([event]).json()["accepted"] == 1
    other = {**event, "channel": "app"}
    body = send([other, {**event, "event_id": "conflict-2"}]).json()  # over either worker: the store decides
    assert (body["accepted"], body["duplicates"], body["conflicts"]) == (1, 0, 1)
    assert body["rejected"] == [
        {"row": 1, "field": "event_id", "reason": "event_id already used for different content"}
    ]
    assert send([event]).json()["duplicates"] == 1  # the first content is still a plain resend
    quarantined = pd.read_csv(paths.quarantine / "api-events.csv")
    assert ((quarantined["event_id"] == "conflict-1") & (quarantined["channel"] == "app")).sum() == 1


def test_bad_events_are_rejected_by_row_and_quarantined(service):
    url, paths = service
    batch = {
        "events": [
            {"ts": "2025-01-01T00:00:00Z", "customer_id": "c1", "channel": "web", "event_type": "page_view"},
            {"ts": "yesterday-ish", "customer_id": "c1", "channel": "web", "event_type": "page_view"},
            {"ts": "2025-01-01T00:00:00Z", "customer_id": "c1", "channel": "fax", "event_type": "page_view"},
        ]
    }
    answer = httpx.post(f"{url}/events", json=batch, headers={"x-api-key": KEY}, timeout=10)
    assert answer.status_code == 200
    body = answer.json()
    assert body["accepted"] == 1
    assert [(r["row"], r["field"]) for r in body["rejected"]] == [(2, "ts"), (3, "channel")]
    quarantined = pd.read_csv(paths.quarantine / "api-events.csv")
    assert {"yesterday-ish"} <= set(quarantined["ts"])


def test_write_endpoints_need_the_api_key(service):
    url, _ = service
    event = {"ts": "2025-01-01T00:00:00Z", "customer_id": "c1", "channel": "web", "event_type": "page_view"}
    assert httpx.post(f"{url}/events", json={"events": [event]}, timeout=10).status_code == 401
    assert (
        httpx.post(f"{url}/events", json={"events": [event]}, headers={"x-api-key": "wrong"}, timeout=10).status_code
        == 401
    )
    assert httpx.post(f"{url}/admin/reload", json={}, timeout=10).status_code == 401
    reloaded = httpx.post(f"{url}/admin/reload", json={}, headers={"x-api-key": KEY}, timeout=10)
    assert reloaded.status_code == 200 and reloaded.json()["model_source"] == "registry"


def test_the_control_group_gets_no_offer_on_any_channel_and_is_logged_as_such(service):
    url, paths = service
    from features.online import open_store
    from serving.decisions import DecisionLog

    held = next(c for c in open_store(paths).customers() if control_mask([c], control_group_from_env())[0])
    ids = []
    for channel in ("web", "app", "email"):
        answer = httpx.post(f"{url}/recommend", json={"customer_id": held, "channel": channel}, timeout=10)
        assert answer.status_code == 200 and answer.json()["offers"] == [], answer.text
        ids.append(answer.json()["decision_id"])
    log = DecisionLog(paths.decisions)
    for _ in range(50):  # the workers' writers commit within milliseconds
        rows = log.decisions()
        rows = rows[rows["decision_id"].isin(ids)]
        if rows["decision_id"].nunique() == len(ids):
            break
        time.sleep(0.1)
    log.close()
    assert rows["decision_id"].nunique() == len(ids) and (rows["group"] == "control").all()
    assert rows["offer_id"].isna().all() and rows["intended_offer_id"].notna().all()


def test_metrics_count_recommendations_per_offer_and_fallbacks(service):
    url, _ = service
    probe = httpx.post(f"{url}/recommend", json={"customer_id": "metrics-probe", "channel": "web"}, timeout=10)
    assert probe.status_code == 200, probe.text
    text = httpx.get(f"{url}/metrics", timeout=10).text
    assert 'nbo_decisions_total{channel="web",fallback="true"}' in text
    assert "nbo_recommendations_total{" in text and "nbo_recommend_seconds_bucket" in text


def publish_uplift(paths) -> None:
    """Train and publish the home's uplift model (one learner: the service is under test, not the learner choice)."""
    from training.uplift.commands import train_uplift

    train_uplift(
        paths,
        pd.read_parquet(paths.raw / "customers.parquet"),
        pd.read_parquet(paths.raw / "exposures.parquet"),
        pd.read_parquet(paths.raw / "offers.parquet"),
        n_boot=5,
        learners=("t",),
    )


def run_campaign(url: str, body: dict, page_size: int = 1000) -> tuple[dict, list[dict]]:
    """Start a campaign job, poll it to its end (each request over either worker) and read every page of it."""
    headers = {"x-api-key": KEY}
    started = httpx.post(f"{url}/campaign", json=body, headers=headers, timeout=10)
    assert started.status_code == 202, started.text
    job = started.json()
    assert job["status"] == "queued" and started.headers["location"] == job["status_url"]
    deadline = time.monotonic() + 120
    while job["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
        job = httpx.get(
            f"{url}{job['status_url']}", params={"page_size": page_size}, headers=headers, timeout=10
        ).json()
    rows, offset = list(job["rows"]), job["next_offset"]
    while offset is not None:
        page = httpx.get(
            f"{url}{job['status_url']}", params={"offset": offset, "page_size": page_size}, headers=headers, timeout=10
        ).json()
        assert page["offset"] == offset and page["status"] == "done"
        rows, offset = rows + page["rows"], page["next_offset"]
    return job, rows


def test_campaign_picks_the_best_offer_per_customer_of_a_segment_under_the_budget(service):
    url, paths = service
    headers = {"x-api-key": KEY}
    body = {"budget": 0.2, "channel": "email", "segment": {"email_opt_in": "True"}}
    missing = httpx.post(f"{url}/campaign", json=body, headers=headers, timeout=10)
    assert missing.status_code == 409 and "nbo uplift train" in missing.text  # no uplift model trained yet
    publish_uplift(paths)
    status = httpx.post(f"{url}/admin/reload", headers=headers, timeout=30).json()
    assert status["uplift_version"] == "1" and status["lifetime_version"] is None  # the registry's champions
    plan, rows = run_campaign(url, body, page_size=7)
    assert plan["status"] == "done", plan
    assert 0 < plan["selected"] <= int(0.2 * plan["eligible"]) and len(rows) == plan["selected"]
    from training.uplift.guard import read_targeting

    guard = read_targeting(paths.home / "uplift")  # the service applies the targeting guard, as nbo campaign does
    assert plan["targeting"].startswith("targeted by the model" if guard["by_model"] else "sent the best single offer")
    assert guard["reason"] in plan["targeting"]
    if not guard["by_model"]:  # one offer, the live one of largest estimated effect x value, for everyone chosen
        assert len({r["offer_id"] for r in rows}) == 1
    assert plan["control_held_out"] > 0  # the global control group gets no campaign
    assert not control_mask([r["customer_id"] for r in rows], control_group_from_env()).any()
    values = [r["expected_value"] for r in rows]
    assert values == sorted(values, reverse=True) and values[-1] > 0
    assert len({r["customer_id"] for r in rows}) == len(rows)  # every row once over the pages
    opted = pd.read_parquet(paths.raw / "customers.parquet").set_index("customer_id")["email_opt_in"]
    assert opted[[r["customer_id"] for r in rows]].all()
    bad = httpx.post(f"{url}/campaign", json={**body, "segment": {"shoe_size": "42"}}, headers=headers, timeout=10)
    assert bad.status_code == 400 and "shoe_size" in bad.text
    assert httpx.post(f"{url}/campaign", json={**body, "budget": 1.5}, headers=headers, timeout=10).status_code == 400


def test_campaign_jobs_are_refused_without_the_key_and_unknown_ids_are_404(service):
    url, _ = service
    unknown = httpx.get(f"{url}/campaign/{'0' * 32}", headers={"x-api-key": KEY}, timeout=10)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_job"
    assert httpx.get(f"{url}/campaign/{'0' * 32}", timeout=10).status_code == 401
    bounds = httpx.get(f"{url}/campaign/{'0' * 32}?page_size=0", headers={"x-api-key": KEY}, timeout=10)
    assert bounds.status_code == 400 and bounds.json()["error"]["status"] == 400


def test_campaign_value_tiers_come_from_lifetime_value(service):
    url, paths = service
    if not (paths.home / "uplift").exists():
        publish_uplift(paths)
    great = pd.read_parquet(paths.raw / "customers.parquet")["customer_id"].iloc[::4].tolist()
    pd.DataFrame({"customer_id": great, "value_tier": "great"}).to_parquet(paths.lifetime)
    body = {"budget": 1.0, "channel": "email", "segment": {"value_tier": "great"}}
    try:
        plan, rows = run_campaign(url, body)  # the tiers are read when the job starts
    finally:
        paths.lifetime.unlink()
    assert plan["status"] == "done", plan
    chosen = {r["customer_id"] for r in rows}
    assert chosen and chosen <= set(great)
