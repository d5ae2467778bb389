"""nbo performance: treatment against the control group on synthetic logs whose true effect is known."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from nbo.cli import app
from nbo.config import get_paths
from serving.decisions import DECISION_COLUMNS, DecisionLog
from serving.rules import ControlGroup, control_mask
from training.performance import NoDecisions, measure_home, measure_performance, tier_before

DAY = 86_400
START = int(pd.Timestamp("2026-03-02", tz="UTC").timestamp())  # a Monday: weeks 2026-W10, W11, W12
MEAN_AMOUNT = 40.0


def synthetic(
    n: int,
    p_treated: float,
    p_control: float,
    seed: int,
    share: float = 0.2,
    channels: tuple[str, ...] = ("web", "email"),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A decision log and purchases: each customer's first decision falls in one of three weeks, on one channel;
    within the 7 days after it they buy (amount exponential, mean MEAN_AMOUNT) with their group's probability.
    Purchases before the first decision and after the horizon (larger for the treatment group) must not count."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"c{i:06d}" for i in range(n)], dtype=object)
    control = control_mask(ids, ControlGroup(share=share))
    first = START + rng.integers(0, 21 * DAY, n)
    channel = np.asarray(channels, dtype=object)[rng.integers(0, len(channels), n)]
    later = first + rng.integers(1, 3 * DAY, n)  # a second decision: not a new start
    rows = []
    for ts_list in (first, later):
        for i in range(n):
            group = "control" if control[i] else "treatment"
            rows.append(
                (
                    f"d{i}-{ts_list[i]}",
                    int(ts_list[i]),
                    ids[i],
                    channel[i],
                    "1",
                    0,
                    None if control[i] else "o1",
                    0,
                    0.1,
                    1.0,
                    1.0,
                    0,
                    group,
                    f"o{1 + i % 3}",
                )
            )
    decisions = pd.DataFrame(rows, columns=list(DECISION_COLUMNS))
    p = np.where(control, p_control, p_treated)
    buys = rng.random(n) < p
    bought = [
        pd.DataFrame(
            {
                "customer_id": ids[buys],
                "ts": first[buys] + rng.integers(0, 7 * DAY, buys.sum()),
                "amount": rng.exponential(MEAN_AMOUNT, buys.sum()),
            }
        ),
        pd.DataFrame({"customer_id": ids, "ts": first - DAY, "amount": 500.0}),  # before: not counted
        pd.DataFrame({"customer_id": ids[~control], "ts": first[~control] + 7 * DAY + 1, "amount": 900.0}),
    ]
    return decisions, pd.concat(bought, ignore_index=True)


END = pd.Timestamp(START + 40 * DAY, unit="s", tz="UTC")


def test_a_known_effect_is_inside_the_interval_and_the_interval_excludes_zero():
    decisions, purchases = synthetic(20_000, 0.30, 0.25, seed=1)
    found = measure_performance(decisions, purchases, END)["overall"]
    truth = (0.30 - 0.25) * MEAN_AMOUNT  # 2.0 per customer
    revenue, converted = found["revenue"]["per_customer"], found["converted"]["per_customer"]
    assert revenue["low"] <= truth <= revenue["high"] and revenue["low"] > 0
    assert converted["low"] <= 0.05 <= converted["high"] and converted["low"] > 0
    assert found["control"] == pytest.approx(0.2 * 20_000, rel=0.05)
    incremental = found["revenue"]["incremental"]
    assert incremental["low"] <= truth * found["treatment"] <= incremental["high"]
    assert incremental["value"] == pytest.approx(revenue["value"] * found["treatment"])


def test_without_an_effect_the_interval_contains_zero():
    decisions, purchases = synthetic(20_000, 0.25, 0.25, seed=2)
    found = measure_performance(decisions, purchases, END)["overall"]
    for metric in ("revenue", "converted"):
        assert found[metric]["per_customer"]["low"] < 0 < found[metric]["per_customer"]["high"]


def test_breakdowns_split_the_customers_and_their_sums():
    decisions, purchases = synthetic(3000, 0.30, 0.25, seed=3)
    even = [f"c{i:06d}" for i in range(0, 3000, 2)]
    activity = pd.DataFrame(
        {
            "customer_id": even * 2,
            "cutoff": [START - DAY] * 1500 + [START + 30 * DAY] * 1500,
            "activity_tier": ["active"] * 1500 + ["very_active"] * 1500,
        }
    )  # the second: too late
    report = measure_performance(
        decisions, purchases, END, activity, pd.DataFrame({"customer_id": even, "value_tier": "great"})
    )
    overall = report["overall"]
    assert list(report["week"]) == ["2026-W10", "2026-W11", "2026-W12"]
    assert set(report["channel"]) == {"web", "email"} and set(report["offer"]) == {"o1", "o2", "o3"}
    assert set(report["activity_tier"]) == {"active", "unknown"}
    for kind in ("channel", "offer", "activity_tier", "value_tier", "week"):  # one channel per customer here
        cells = report[kind].values()
        for side in ("treatment", "control"):
            assert sum(c[side] for c in cells) == overall[side]
            for metric in ("revenue", "converted"):
                assert sum(c[metric][f"{side}_sum"] for c in cells) == pytest.approx(overall[metric][f"{side}_sum"])


def test_the_activity_tier_is_the_one_before_the_first_decision():
    activity = pd.DataFrame(
        {
            "customer_id": ["a", "a", "b"],
            "cutoff": [START - 7 * DAY, START + 3 * DAY, START + DAY],
            "activity_tier": ["inactive", "active", "very_active"],
        }
    )
    units = pd.DataFrame(
        {"customer_id": ["a", "a", "b", "c"], "ts": [START + 5 * DAY, START + DAY, START, START]},
        index=[10, 11, 12, 13],
    )
    assert tier_before(units, activity).tolist() == ["active", "inactive", "unknown", "unknown"]


def test_a_customer_reached_on_two_channels_counts_in_each_from_its_first_decision_there():
    row = dict(zip(DECISION_COLUMNS, ("d1", START, "c1", "web", "1", 0, "o1", 0, 0.1, 1.0, 1.0, 0, "treatment", "o1")))
    decisions = pd.DataFrame([row, {**row, "decision_id": "d2", "ts": START + 5 * DAY, "channel": "email"}])
    purchases = pd.DataFrame({"customer_id": ["c1"], "ts": [START + 6 * DAY], "amount": [10.0]})
    report = measure_performance(decisions, purchases, END)
    assert report["overall"]["treatment"] == 1 and report["overall"]["revenue"]["treatment_sum"] == 10.0
    assert report["channel"]["web"]["revenue"]["treatment_sum"] == 10.0  # day 6 is within 7 days of day 0
    assert report["channel"]["email"]["revenue"]["treatment_sum"] == 10.0
    assert report["overall"]["revenue"]["per_customer"]["value"] is None  # no control customer: no estimate


def test_customers_whose_horizon_has_not_ended_are_left_out():
    decisions, purchases = synthetic(1000, 0.3, 0.25, seed=4)
    report = measure_performance(decisions, purchases, pd.Timestamp(START + 14 * DAY, unit="s", tz="UTC"))
    starts = decisions[decisions["rank"] == 0].groupby("customer_id")["ts"].min()
    assert report["incomplete"] == int((starts > START + 7 * DAY).sum()) > 0
    assert report["overall"]["treatment"] + report["overall"]["control"] == 1000 - report["incomplete"]


def test_since_keeps_the_decisions_of_the_period():
    decisions, purchases = synthetic(1000, 0.3, 0.25, seed=5)
    since = pd.Timestamp(START + 14 * DAY, unit="s", tz="UTC")
    report = measure_performance(decisions, purchases, END, since=since)
    in_period = decisions.loc[decisions["ts"] >= since.timestamp(), "customer_id"].nunique()
    assert report["customers"] == in_period < 1000  # who had a decision since, from their first one since
    assert list(report["week"]) == ["2026-W12"]
    with pytest.raises(NoDecisions, match="no decisions since 2026-05"):
        measure_performance(decisions, purchases, END, since=pd.Timestamp("2026-05-01", tz="UTC"))


def test_an_empty_log_says_so_clearly(tmp_path):
    paths = get_paths(tmp_path)
    with pytest.raises(NoDecisions, match="no decision log"):
        measure_home(paths)
    DecisionLog(paths.decisions).close()
    result = CliRunner().invoke(app, ["performance", "--home", str(tmp_path)])
    assert result.exit_code == 2 and "no decisions" in result.output and "nothing to measure yet" in result.output
    result = CliRunner().invoke(app, ["performance", "--home", str(tmp_path), "--since", "last tuesday"])
    assert result.exit_code == 2 and "--since takes an ISO date" in result.output


def test_the_command_measures_a_home(tmp_path):
    """The decision log of a home and its raw purchases, as JSON and as tables."""
    paths = get_paths(tmp_path)
    decisions, purchases = synthetic(2000, 0.35, 0.2, seed=6)
    log = DecisionLog(paths.decisions)
    log.record(list(decisions.itertuples(index=False, name=None)))
    log.close()
    paths.raw.mkdir(parents=True)
    events = pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(len(purchases))],
            "customer_id": purchases["customer_id"],
            "ts": pd.to_datetime(purchases["ts"], unit="s", utc=True),
            "event_type": "purchase",
            "amount": purchases["amount"],
            "channel": "web",
        }
    )
    last = events["ts"].max()
    events.to_parquet(paths.raw / "events.parquet")
    result = CliRunner().invoke(app, ["performance", "--home", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["end"] == last.isoformat()
    assert report["overall"]["revenue"]["per_customer"]["low"] > 0
    assert report == json.loads(json.dumps(measure_home(paths)))
    table = CliRunner().invoke(app, ["performance", "--home", str(tmp_path), "--html", str(tmp_path / "p.html")])
    assert table.exit_code == 0, table.output
    assert "significantly positive" in table.output and "per ISO week" in table.output
    html = (tmp_path / "p.html").read_text()
    assert "data:image/png;base64," in html and "2026-W11" in html
