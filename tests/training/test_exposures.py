"""Exposures built from the decision log: outcomes within the horizon, category matching, arms, propensities."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.offline import to_seconds
from nbo.config import get_paths
from serving.decisions import DecisionLog
from simulator.generate import simulate
from training.exposures import build_exposures, exposures_from_log
from training.uplift.model import CONTROL, prepare_exposures, validate_inputs

DAY0 = pd.Timestamp("2026-03-02 09:00", tz="UTC")
DAY_S = 86_400


def at(days: float) -> pd.Timestamp:
    return DAY0 + pd.Timedelta(days=days)


@pytest.fixture
def home(tmp_path, make_events):
    """Two offers (shoes, bags), a few purchases and clicks, and a decision log of three decisions."""
    paths = get_paths(tmp_path)
    paths.raw.mkdir(parents=True)
    pd.DataFrame(
        {
            "offer_id": ["o_shoes", "o_bags"],
            "category": ["shoes", "bags"],
            "value": [5.0, 4.0],
            "channels": ["web|email", "web|email"],
        }
    ).to_parquet(paths.raw / "offers.parquet")
    make_events(
        [
            dict(ts=at(2), customer_id="c1", event_type="purchase", category="shoes", amount=50.0),
            dict(ts=at(10), customer_id="c1", event_type="purchase", category="bags", amount=30.0),  # past the horizon
            dict(ts=at(-1), customer_id="c2", event_type="purchase", category="shoes", amount=20.0),  # before it
            dict(ts=at(1), anonymous_id="dev9", event_type="page_view"),
            dict(ts=at(3), anonymous_id="dev9", event_type="purchase", category="shoes", amount=12.5),  # c2's device
            dict(ts=at(4), anonymous_id="dev9", customer_id="c2", event_type="login"),
            dict(ts=at(20), customer_id="c9", event_type="page_view"),  # the data's clock
        ]
    ).to_parquet(paths.raw / "events.parquet")
    log = DecisionLog(paths.decisions)
    t0 = int(DAY0.timestamp())
    log.record(
        [
            ("d1", t0, "c1", "web", "3", 0, "o_shoes", 0, 0.3, 1.5, 0.9, 0, "treatment", "o_shoes"),
            ("d1", t0, "c1", "web", "3", 0, "o_bags", 1, 0.1, 0.4, 0.05, 1, "treatment", "o_shoes"),
            ("d2", t0 + 60, "c2", "email", "3", 0, "o_shoes", 0, 0.2, 1.0, 1.0, 0, "treatment", "o_shoes"),
            (
                "d3",
                int(at(17).timestamp()),
                "c1",
                "web",
                "3",
                0,
                "o_shoes",
                0,
                0.3,
                1.5,
                0.9,
                0,
                "treatment",
                "o_shoes",
            ),
        ]
    )
    log.record_outcomes(
        make_events(
            [
                dict(ts=at(0.1), customer_id="c1", event_type="offer_click", offer_id="o_shoes", decision_id="d1"),
                dict(ts=at(8), customer_id="c2", event_type="offer_click", offer_id="o_shoes", decision_id="d2"),
            ]
        )
    )
    log.close()
    return paths


def test_outcomes_count_in_the_offers_category_within_the_horizon(home):
    found = exposures_from_log(home, horizon_days=7).set_index(["decision_id", "offer_id"])
    shoes, bags = found.loc[("d1", "o_shoes")], found.loc[("d1", "o_bags")]
    assert (shoes["category"], shoes["converted"], shoes["revenue"]) == ("shoes", True, 50.0)
    assert (bags["category"], bags["converted"], bags["revenue"]) == ("bags", False, 0.0)  # bags bought on day 10
    assert (bags["converted_any"], bags["revenue_any"]) == (True, 50.0)
    assert shoes["clicked"] and not bags["clicked"]


def test_a_devices_anonymous_purchase_counts_for_its_customer_and_late_clicks_do_not(home):
    row = exposures_from_log(home, horizon_days=7).set_index("decision_id").loc["d2"]
    assert (row["converted"], row["revenue"]) == (True, 12.5)  # not the purchase of the day before
    assert not row["clicked"]  # clicked on day 8


def test_a_purchase_kept_only_in_the_event_lake_counts(home, make_events):
    from features.lake import append_to_lake

    append_to_lake(
        home,
        make_events(
            [dict(ts=at(1), customer_id="c1", event_type="purchase", category="bags", amount=7.0, event_id="posted-1")]
        ),
    )
    bags = exposures_from_log(home, horizon_days=7).set_index(["decision_id", "offer_id"]).loc[("d1", "o_bags")]
    assert (bags["converted"], bags["revenue"], bags["revenue_any"]) == (True, 7.0, 57.0)


def test_the_horizon_bounds_outcomes_and_marks_rows_it_has_not_passed(home):
    short = exposures_from_log(home, horizon_days=1).set_index(["decision_id", "offer_id"])
    assert not short.loc[("d1", "o_shoes"), "converted"]  # bought on day 2
    found = exposures_from_log(home, horizon_days=7).set_index("decision_id")
    assert found.loc["d3", "horizon_complete"] == False  # noqa: E712 (17 + 7 days > day 20)
    assert found.loc[["d1", "d2"], "horizon_complete"].all()
    assert "d3" not in set(prepare_exposures(found.reset_index())["decision_id"])


def test_logged_propensities_and_intended_offers_are_carried(home):
    found = exposures_from_log(home).set_index(["decision_id", "offer_id"])
    bags = found.loc[("d1", "o_bags")]
    assert (bags["logged_propensity"], bags["propensity"]) == (0.05, 0.05)  # no control decision: P(treated) = 1
    assert bags["explored"] and bags["intended_offer_id"] == "o_shoes"
    assert (found["group"] == "treatment").all()


def test_a_log_without_groups_counts_every_slot_as_treated_and_meant(home):
    import sqlite3

    with sqlite3.connect(home.decisions) as db:
        db.execute('ALTER TABLE decisions DROP COLUMN "group"')
        db.execute("ALTER TABLE decisions DROP COLUMN intended_offer_id")
    found = exposures_from_log(home)
    assert (found["group"] == "treatment").all() and (found["offer_id"] != CONTROL).all()
    assert (found["intended_offer_id"] == found["offer_id"]).all()


def test_control_slots_become_control_rows_with_their_intended_offer():
    t0 = int(DAY0.timestamp())
    decisions = pd.DataFrame(
        {
            "decision_id": ["a", "b", "c", "d"],
            "ts": [t0] * 4,
            "customer_id": ["c1", "c2", "c3", "c4"],
            "channel": ["email"] * 4,
            "model_version": ["1"] * 4,
            "fallback": [0] * 4,
            "offer_id": ["o_shoes", "o_bags", None, "o_shoes"],
            "rank": [0] * 4,
            "score": [0.1] * 4,
            "expected_value": [0.1] * 4,
            "propensity": [0.9, 0.05, 1.0, 0.9],
            "explored": [0, 1, 0, 0],
            "group": ["treatment", "treatment", "control", "treatment"],
            "intended_offer_id": [None, "o_shoes", "o_bags", None],
        }
    )
    purchases = pd.DataFrame(
        {"customer_id": ["c3", "c2"], "ts": [at(1), at(1)], "category": ["bags", "shoes"], "amount": [40.0, 10.0]}
    )
    categories = pd.Series({"o_shoes": "shoes", "o_bags": "bags"})
    found = build_exposures(decisions, pd.DataFrame(), purchases, categories, 7, at(30)).set_index("decision_id")
    control = found.loc["c"]
    assert (control["offer_id"], control["intended_offer_id"], control["category"]) == (CONTROL, "o_bags", "bags")
    assert (control["converted"], control["revenue"], control["clicked"]) == (True, 40.0, False)
    assert control["propensity"] == pytest.approx(0.25)  # one decision in four was a control one
    explored = found.loc["b"]  # shown bags, the model meant shoes: the outcome is the shown offer's
    assert (explored["offer_id"], explored["intended_offer_id"], explored["converted"]) == ("o_bags", "o_shoes", False)
    assert explored["propensity"] == pytest.approx(0.75 * 0.05)
    configured = build_exposures(decisions, pd.DataFrame(), purchases, categories, 7, at(30), control_share=0.05)
    assert configured.set_index("decision_id").loc["a", "propensity"] == pytest.approx(0.95 * 0.9)
    validate_inputs(pd.DataFrame({"customer_id": ["c1"]}), found.reset_index(), "converted")


def test_a_log_of_the_simulators_exposures_gives_back_its_outcomes(tmp_path):
    """The simulator's campaigns written as decisions: the outcomes found agree with the simulator's own."""
    paths = get_paths(tmp_path)
    simulate(paths.raw, 400, 60, seed=3, start="2026-01-01")
    truth = pd.read_parquet(paths.raw / "exposures.parquet")
    truth = truth[truth["horizon_complete"]].reset_index(drop=True)
    control = truth["offer_id"] == CONTROL
    decisions = pd.DataFrame(
        {
            "decision_id": [f"x{i}" for i in range(len(truth))],
            "ts": to_seconds(truth["ts"]),
            "customer_id": truth["customer_id"],
            "channel": truth["channel"],
            "model_version": "sim",
            "fallback": 0,
            "offer_id": truth["offer_id"].where(~control, None),
            "rank": 0,
            "score": 0.0,
            "expected_value": 0.0,
            "propensity": np.where(control, 1.0, truth["propensity"] / 0.8),
            "explored": 0,
            "group": np.where(control, "control", "treatment"),
            "intended_offer_id": truth["intended_offer_id"],
        }
    )
    log = DecisionLog(paths.decisions)
    log.record(list(decisions.itertuples(index=False, name=None)))
    log.close()
    found = exposures_from_log(paths, horizon_days=7, control_share=0.2)
    assert (found["offer_id"] == truth["offer_id"]).all()
    assert np.allclose(found["propensity"], truth["propensity"])
    assert found["horizon_complete"].all()
    for outcome in ("converted", "converted_any"):
        assert (found[outcome] == truth[outcome]).all(), outcome
    assert np.allclose(found["revenue"], truth["revenue"]) and np.allclose(found["revenue_any"], truth["revenue_any"])
    assert found["converted"].sum() > 50


def test_uplift_train_from_an_empty_log_says_so(tmp_path):
    from typer.testing import CliRunner

    from nbo.cli import app

    result = CliRunner().invoke(app, ["uplift", "train", "--from-log", "--home", str(tmp_path)])
    assert result.exit_code == 2 and "holds no decisions yet" in result.output
