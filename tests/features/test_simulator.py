"""Tests of the behaviour simulator and its ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.schema import CHANNELS, EVENT_TYPES, EVENTS, validate_events
from simulator.generate import load_truth, simulate

FILES = ("events", "customers", "items", "offers", "exposures", "truth")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    out = tmp_path_factory.mktemp("sim")
    return out, simulate(out, n_customers=2500, days=90, seed=11, start="2025-06-01")


@pytest.fixture(scope="module")
def events(run: tuple[Path, dict[str, object]]) -> pd.DataFrame:
    return pd.read_parquet(run[0] / "events.parquet")


@pytest.fixture(scope="module")
def stitch(events: pd.DataFrame) -> pd.Series:
    """anonymous_id -> customer_id, learnt from events carrying both."""
    both = events.dropna(subset=["customer_id", "anonymous_id"])
    return both.drop_duplicates("anonymous_id").set_index("anonymous_id")["customer_id"]


def read_all(out: Path) -> dict[str, bytes]:
    return {name: (out / f"{name}.parquet").read_bytes() for name in FILES}


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path: Path) -> None:
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        simulate(tmp_path / name, n_customers=300, days=30, seed=seed)
    first, again, other = (read_all(tmp_path / n) for n in "abc")
    assert first == again
    assert first["events"] != other["events"] and first["truth"] != other["truth"]


def test_events_are_canonical_and_all_valid(run, events: pd.DataFrame) -> None:
    out, summary = run
    offers = set(pd.read_parquet(out / "offers.parquet")["offer_id"])
    assert list(events.columns) == EVENTS.names
    assert str(events["ts"].dtype) == "datetime64[ns, UTC]"
    assert events["amount"].dtype == np.float64 and events["quantity"].dtype == np.float64
    accepted, quarantine = validate_events(events, "sim", known_offers=offers)
    assert len(quarantine) == 0 and len(accepted) == len(events) == summary["events"]
    assert set(events["event_type"]) == set(EVENT_TYPES) - {"opt_out"}  # simulated customers never opt out
    assert set(events["channel"]) == set(CHANNELS)
    assert events["event_id"].is_unique


def test_catalogue_has_readable_categories_prices_margins_and_new_items(run, events: pd.DataFrame) -> None:
    out, _ = run
    items = pd.read_parquet(out / "items.parquet")
    assert 10 <= items["category"].nunique() <= 20 and {"coffee", "running_shoes"} <= set(items["category"])
    assert 300 <= len(items) <= 3000
    assert (items["margin"] > 0).all() and (items["margin"] < items["price"]).all()
    start = pd.Timestamp("2025-06-01", tz="UTC")
    assert (items["launch_ts"] > start).sum() > 10
    views = events[events["event_type"].isin(["product_view", "purchase"])].merge(items, on="item_id")
    assert (views["ts"] >= views["launch_ts"]).all()
    assert (views["launch_ts"] > start).any()


def test_value_is_heavy_tailed(run, events: pd.DataFrame) -> None:
    _, summary = run
    spend = events[events["event_type"] == "purchase"].groupby("customer_id")["amount"].sum()
    spend = spend.reindex([f"c{i:07d}" for i in range(1, 2501)], fill_value=0.0).sort_values(ascending=False)
    share = spend.iloc[:375].sum() / spend.sum()
    assert 0.45 <= share <= 0.8
    assert summary["top15_revenue_share"] == pytest.approx(share, abs=0.01)


def test_anonymous_browsing_is_stitched_on_login_click_or_card(events: pd.DataFrame, stitch: pd.Series) -> None:
    alone = events[events["customer_id"].isna()]
    assert alone["anonymous_id"].notna().all() and len(alone) > 0
    assert alone["anonymous_id"].isin(stitch.index).mean() > 0.5
    linking = events.dropna(subset=["customer_id", "anonymous_id"])
    assert {"login", "email_click"} <= set(linking["event_type"])
    assert (linking.loc[linking["event_type"] == "login", "channel"] == "store").any()
    devices = linking.groupby("customer_id")["anonymous_id"].nunique()
    assert (devices >= 3).sum() > 0


def _linked_pairs(stitch: pd.Series, first: pd.DataFrame, then: pd.DataFrame, window: str) -> int:
    """How many 'then' rows follow a 'first' row of the same (stitched) customer and category."""
    first = first.assign(who=first["customer_id"].fillna(first["anonymous_id"].map(stitch)))
    pairs = then.merge(
        first[["who", "category", "ts"]],
        left_on=["customer_id", "category"],
        right_on=["who", "category"],
        suffixes=("", "_before"),
    )
    gap = pairs["ts"] - pairs["ts_before"]
    return int(pairs.loc[(gap > pd.Timedelta(0)) & (gap < pd.Timedelta(window)), "event_id"].nunique())


def test_ropo_showrooming_and_cross_device_carts(run, events: pd.DataFrame, stitch: pd.Series) -> None:
    _, summary = run
    buys = events[events["event_type"] == "purchase"]
    views = events[events["event_type"] == "product_view"]
    online = ["web", "app"]
    store_buys = buys[buys["channel"] == "store"]
    ropo = _linked_pairs(stitch, views[views["channel"].isin(online)], store_buys, "4D")
    assert 0.1 <= ropo / len(store_buys) <= 0.8
    assert 0.1 <= summary["ropo_share"] <= 0.8
    online_buys = buys[buys["channel"].isin(online)]
    showroom = _linked_pairs(stitch, views[views["channel"] == "store"], online_buys, "4D")
    assert 0.03 <= showroom / len(online_buys) <= 0.5 and 0.03 <= summary["showrooming_share"] <= 0.5
    carts = events[(events["event_type"] == "add_to_cart") & (events["channel"] == "app")]
    cross = _linked_pairs(stitch, carts, online_buys[online_buys["channel"] == "web"], "1D")
    assert cross > 20


def test_exposures_are_randomised_with_propensities_and_control(run, events: pd.DataFrame) -> None:
    out, _ = run
    exp = pd.read_parquet(out / "exposures.parquet")
    control = exp["offer_id"] == "control"
    assert 0.15 <= control.mean() <= 0.25
    assert np.allclose(exp.loc[control, "propensity"], 0.2)
    treated = exp.loc[~control, "propensity"]
    assert treated.between(0, 0.8).all() and treated.nunique() > 100
    assert set(exp["channel"]) == {"email", "sms"} and exp["campaign_id"].str.startswith("cmp-").all()
    sent = events[events["event_type"] == "email_sent"]
    assert sent["campaign_id"].notna().all() and sent["category"].notna().all()
    offered = sent.dropna(subset=["offer_id"])
    assert len(offered) == ((exp["channel"] == "email") & ~control).sum()
    with_offer = events[(events["event_type"] == "purchase") & events["offer_id"].notna()]
    assert len(with_offer) > 50
    assert exp.loc[~control, "converted"].mean() > exp.loc[control, "converted"].mean()


def test_truth_matches_outcomes_and_effects_are_heterogeneous(run) -> None:
    out, _ = run
    truth = load_truth(out)
    exp = pd.read_parquet(out / "exposures.parquet")
    exp = exp[exp["horizon_complete"]]
    args = (exp["customer_id"], exp["intended_offer_id"], exp["ts"])
    with_offer, without = truth.purchase_probability(*args, True), truth.purchase_probability(*args, False)
    assert ((with_offer >= 0) & (with_offer <= 1)).all()
    assert with_offer.mean() > without.mean()
    hurt = (with_offer < without).mean()
    assert 0.02 <= hurt <= 0.5
    treated = (exp["offer_id"] != "control").to_numpy()
    assert exp["converted"][treated].mean() == pytest.approx(with_offer[treated].mean(), abs=0.006)
    assert exp["converted"][~treated].mean() == pytest.approx(without[~treated].mean(), abs=0.01)
    customers = pd.read_parquet(out / "customers.parquet").set_index("customer_id")
    lift = pd.Series(with_offer - without, index=exp["customer_id"].to_numpy())
    pressure = customers.loc[lift.index, "newsletters_per_week"].to_numpy()
    assert lift[pressure == 0].mean() > lift[pressure == 5].mean()


def test_weekday_and_sale_seasonality(events: pd.DataFrame) -> None:
    buys = events[events["event_type"] == "purchase"]
    per_day = buys.groupby(buys["ts"].dt.normalize()).size()
    weekday = per_day.groupby(per_day.index.day_of_week).mean()
    assert weekday[5] > 1.2 * weekday[[0, 1]].mean()
    in_sale = (per_day.index >= "2025-06-25") & (per_day.index <= "2025-07-08")
    around = (per_day.index >= "2025-06-11") & (per_day.index <= "2025-07-22") & ~in_sale
    assert per_day[in_sale].mean() > 1.4 * per_day[around].mean()


def test_purchase_amounts_follow_prices_and_discounts(run, events: pd.DataFrame) -> None:
    out, _ = run
    items = pd.read_parquet(out / "items.parquet").set_index("item_id")
    offers = pd.read_parquet(out / "offers.parquet").set_index("offer_id")
    buys = events[(events["event_type"] == "purchase") & (events["ts"] >= "2025-07-10")]
    list_price = items.loc[buys["item_id"], "price"].to_numpy() * buys["quantity"].to_numpy()
    discount = offers["discount"].reindex(buys["offer_id"]).fillna(0.0).to_numpy()
    assert np.allclose(buys["amount"], np.round(list_price * (1 - discount), 2), atol=0.011)
    assert (discount > 0).any()
