"""A retailer's own files in the public formats, end to end with the `nbo` commands: ingest, features, train,
serve (the service's recommender on the home, at the data's dates), campaign (an uplift model learnt from those
decisions and the purchases that followed them in the files).

The files in tests/data have the exact headers and quirks of REES46, RetailRocket and UCI Online Retail
(tests/data/make_fixtures.py writes them). Nothing but the files is given: items, offers and customers the
retailer did not supply are derived from the events.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.ingest_catalogue import OFFER_PREFIX, is_derived
from features.pipeline import read_raw
from nbo.cli import app
from nbo.config import Paths, get_paths
from serving.process import missing_to_serve
from serving.recommender import Recommender
from serving.rules import control_group_from_env, in_control

DATA = Path(__file__).resolve().parents[1] / "data"
SOURCES = {  # per format: (table, format, files) of each `nbo ingest`
    "rees46": [("events", "rees46", ["rees46/2019-Oct.csv"])],
    "retailrocket": [
        ("events", "retailrocket", ["retailrocket/events.csv"]),
        ("items", "retailrocket", ["retailrocket/item_properties.csv"]),
    ],
    "uci": [("events", "uci", ["uci/Online Retail.csv"]), ("items", "canonical", ["uci/items.csv"])],
}


def expected_quarantine(fmt: str) -> dict[str, int]:
    """What the quirks of a format's event file send to quarantine, counted in the file: exact repeats (REES46,
    UCI) and UCI's guest lines, which name no customer."""
    _, _, files = SOURCES[fmt][0]
    source = pd.read_csv(DATA / files[0], dtype=str, keep_default_na=False)
    guest = source["CustomerID"] == "" if fmt == "uci" else pd.Series(False, index=source.index)
    counts = {
        "customer_id: neither customer_id nor anonymous_id is set": int(guest.sum()),
        "event_id: duplicate key": int(source[~guest].duplicated().sum()),
    }
    return {reason: n for reason, n in counts.items() if n}


def nbo(home: Path, *args: str) -> str:
    """Run an `nbo` command on the home; its output, after checking it succeeded."""
    result = CliRunner().invoke(app, [*args, "--home", str(home)])
    assert result.exit_code == 0, f"nbo {' '.join(args)}: {result.output}\n{result.exception!r}"
    return result.output


def serve_replay(paths: Paths, times: list[pd.Timestamp]) -> list:
    """The service's decisions for every known customer at each of the times (logged in the home)."""
    recommender = Recommender.from_home(paths)
    try:
        customers = read_raw(paths, "customers")["customer_id"].tolist()
        return [recommender.recommend(c, "email", k=2, now=t) for t in times for c in customers]
    finally:
        recommender.log.close()
        recommender.store.close()


@pytest.mark.parametrize("fmt", list(SOURCES))
def test_a_public_format_goes_from_files_to_a_campaign(fmt, tmp_path, monkeypatch):
    monkeypatch.setenv("NBO_CONTROL_SHARE", "0.5")  # half the customers: the uplift model's control arm
    home = tmp_path / "home"
    paths = get_paths(home)
    for table, source_format, files in SOURCES[fmt]:
        nbo(home, "ingest", "--table", table, "--format", source_format, *[str(DATA / f) for f in files])
    reasons = pd.concat([pd.read_csv(p) for p in paths.quarantine.glob("*.csv")])
    assert (reasons["field"] + ": " + reasons["reason"]).value_counts().to_dict() == expected_quarantine(fmt)

    nbo(home, "features")
    lineage = json.loads(paths.training_set.with_suffix(".json").read_text())
    cutoffs, horizon = [pd.Timestamp(c) for c in lineage["cutoffs"]], lineage["horizon_days"]
    assert (len(cutoffs), horizon) == (4, 7)  # a month of events: four weekly cutoffs, fitted to the span
    assert lineage["positives"] > 10
    assert is_derived(paths.raw / "offers.parquet") and is_derived(paths.raw / "customers.parquet")
    assert is_derived(paths.raw / "items.parquet") == (fmt == "rees46")

    nbo(home, "train")
    assert missing_to_serve(paths) == []  # `nbo serve` would start
    decisions = serve_replay(paths, cutoffs[-3::2])  # two weeks apart: one e-mail offer a week at most
    offers = set(read_raw(paths, "offers")["offer_id"])
    assert not any(d.fallback for d in decisions) and {d.model_version for d in decisions} == {"1"}
    control = control_group_from_env()
    assert not any(d.offers for d in decisions if in_control(d.customer_id, control))
    treated = [d for d in decisions if not in_control(d.customer_id, control)]
    assert sum(bool(d.offers) for d in treated) > len(treated) / 2 and all(len(d.offers) <= 2 for d in treated)
    assert {o.offer_id for d in treated for o in d.offers} <= offers
    assert all(o.startswith(OFFER_PREFIX) for o in offers)  # one offer per category, none was given

    nbo(
        home,
        "uplift",
        "train",
        "--from-log",
        "--split",
        "customer",
        "--horizon-days",
        str(horizon),
        "--bootstraps",
        "20",
    )
    said = nbo(home, "campaign", "--budget", "0.5", "--now", (cutoffs[-1] + pd.Timedelta(days=horizon)).isoformat())
    plan = pd.read_parquet(home / "campaign.parquet")
    assert {"customer_id", "offer_id", "expected_value"} <= set(plan.columns)
    assert set(plan["offer_id"]) <= offers and plan["customer_id"].is_unique
    assert "eligible customers selected" in said
