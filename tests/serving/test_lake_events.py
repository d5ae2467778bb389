"""/events and the event lake, in process: what enters the lake, and a lake that cannot be written."""

import json
import shutil
import types

import pandas as pd
import pytest

from features.lake import read_lake, read_segments, segment_files
from nbo.config import get_paths


@pytest.fixture
def service(trained_home, tmp_path, monkeypatch):
    """The service class itself on a private copy of the trained home, and a request context."""
    paths = get_paths(tmp_path / "home")
    shutil.copytree(trained_home[0].home, paths.home)
    monkeypatch.setenv("NBO_HOME", str(paths.home))
    monkeypatch.delenv("NBO_API_KEY", raising=False)
    from serving.service import NextBestOffer

    return NextBestOffer.inner(), paths


def post(service, events: list[dict]):
    """Call the /events method; return (status, body as a dict)."""
    ctx = types.SimpleNamespace(
        request=types.SimpleNamespace(headers={}), response=types.SimpleNamespace(headers={}, status_code=200)
    )
    answer = service.events(ctx, events=events)
    if hasattr(answer, "body"):
        return ctx.response.status_code, json.loads(answer.body), ctx.response.headers
    return 200, answer.model_dump(), ctx.response.headers


TS = (pd.Timestamp.now(tz="UTC") - pd.Timedelta(seconds=5)).isoformat()


def views(ids: list[str]) -> list[dict]:
    return [
        {"event_id": i, "ts": TS, "customer_id": "lake-c1", "channel": "web", "event_type": "product_view"} for i in ids
    ]


def test_the_lake_takes_applied_events_and_resends_never_conflicts_or_rejected_rows(service):
    svc, paths = service
    assert post(svc, views(["a", "b"]))[1]["accepted"] == 2
    status, body, _ = post(
        svc,
        [*views(["a"]), {**views(["b"])[0], "channel": "app"}, {**views(["c"])[0], "channel": "fax"}, *views(["d"])],
    )
    assert status == 200 and (body["duplicates"], body["conflicts"], len(body["rejected"])) == (1, 1, 2)
    kept = read_segments(segment_files(paths.lake)).to_pandas()  # every line appended, before deduplication
    assert sorted(kept["event_id"]) == ["a", "a", "b", "d"] and set(kept["channel"]) == {"web"}
    assert sorted(read_lake(paths)["event_id"]) == ["a", "b", "d"]


def test_a_lake_that_cannot_be_written_refuses_the_batch_and_its_resend_reaches_the_lake(service):
    svc, paths = service
    paths.lake.mkdir()
    (paths.lake / "incoming").write_text("")  # a file where the folder should be: every append fails
    batch = [*views(["x", "y"]), {**views(["z"])[0], "channel": "fax"}]
    status, body, headers = post(svc, batch)
    assert status == 503 and body["error"]["code"] == "lake_unavailable" and headers["Retry-After"] == "1"
    assert "send the batch again" in body["error"]["message"]
    assert not (paths.quarantine / "api-events.csv").exists()  # nothing of the refused batch is recorded
    (paths.lake / "incoming").unlink()
    status, body, _ = post(svc, batch)
    assert status == 200 and (body["accepted"], body["duplicates"], len(body["rejected"])) == (0, 2, 1)
    assert sorted(read_lake(paths)["event_id"]) == ["x", "y"]
