import numpy as np
import pandas as pd
import pytest

from features import offline
from features.aggregates import entity_time_order
from features.definitions import FEATURES, LOOKBACK
from features.offline import (
    build_training_set,
    choose_cutoffs,
    customer_features,
    features_at,
    find_active,
    to_signal_frame,
)
from features.training_set import with_customer_columns
from nbo.units import DAY_SECONDS
from tests.features.conftest import CATEGORIES

CUTOFF = pd.Timestamp("2025-03-10", tz="UTC")


@pytest.fixture
def history(make_events):
    return make_events(
        [
            dict(ts="2025-03-01 10:00", customer_id="c1", event_type="product_view", category="shoes"),
            dict(ts="2025-03-08 10:00", customer_id="c1", event_type="product_view", category="shoes"),
            dict(ts="2025-03-09 23:59", customer_id="c1", event_type="purchase", category="coffee", amount=12.0),
            dict(ts="2025-03-09 12:00", customer_id="c2", event_type="email_open", channel="email"),
            dict(ts="2025-03-12 10:00", customer_id="c1", event_type="purchase", category="shoes", amount=80.0),
        ]
    )


def at(frame, pairs, when=CUTOFF):
    return features_at(
        frame, int(when.timestamp()), pd.DataFrame(pairs, columns=["customer_id", "category"]), list(FEATURES)
    ).set_index(["customer_id", "category"])


def test_windows_count_whole_days_back_from_the_cutoff(history):
    row = at(to_signal_frame(history), [("c1", "shoes")]).loc[("c1", "shoes")]
    assert row["cat_product_views_1d"] == 0
    assert row["cat_product_views_7d"] == 1
    assert row["cat_product_views_30d"] == 2
    assert row["cust_revenue_7d"] == 12.0
    assert row["cat_purchases_30d"] == 0
    assert row["cust_purchases_recency_days"] == pytest.approx(1 / 1440)
    assert np.isnan(row["cat_purchases_recency_days"])


def test_future_events_cannot_change_a_feature(history, make_events):
    later = make_events(
        [
            dict(ts="2025-03-10 00:00", customer_id="c1", event_type="purchase", category="shoes", amount=999.0),
            dict(ts="2025-04-01", customer_id="c2", event_type="product_view", category="shoes"),
            dict(ts="2025-03-10 00:00", customer_id="c2", anonymous_id="tablet", event_type="login"),
        ]
    )
    pairs = [("c1", "shoes"), ("c2", "shoes")]
    before = at(to_signal_frame(history), pairs)
    after = at(to_signal_frame(pd.concat([history, later], ignore_index=True)), pairs)
    pd.testing.assert_frame_equal(before, after)


def test_devices_count_once_each_from_their_first_link(make_events):
    events = make_events(
        [
            dict(ts="2025-03-01 09:00", customer_id="c1", anonymous_id="phone", event_type="login"),
            dict(ts="2025-03-05 09:00", customer_id="c1", anonymous_id="phone", event_type="login"),
            dict(ts="2025-03-06 09:00", anonymous_id="laptop", event_type="page_view"),
            dict(
                ts="2025-03-09 09:00",
                customer_id="c1",
                anonymous_id="laptop",
                event_type="email_click",
                channel="email",
            ),
        ]
    )
    frame = to_signal_frame(events)
    before, after = (
        at(frame, [("c1", "shoes")], pd.Timestamp(day, tz="UTC")).loc[("c1", "shoes")]
        for day in ("2025-03-08", "2025-03-10")
    )
    assert (before["cust_devices_all"], after["cust_devices_all"]) == (1, 2)
    assert (before["cust_devices_1d"], after["cust_devices_1d"]) == (0, 1)
    assert after["cust_devices_recency_days"] == pytest.approx(15 / 24)


def test_session_window_counts_the_last_30_minutes(make_events):
    events = make_events(
        [
            dict(ts="2025-03-09 23:20", customer_id="c1", event_type="product_view", category="shoes"),
            dict(ts="2025-03-09 23:45", customer_id="c1", event_type="page_view", category="shoes"),
            dict(ts="2025-03-09 23:50", customer_id="c1", event_type="add_to_cart", category="coffee"),
        ]
    )
    rows = at(to_signal_frame(events), [("c1", "shoes"), ("c1", "coffee")])
    assert rows.loc[("c1", "shoes"), "cat_views_30m"] == 1
    assert rows.loc[("c1", "shoes"), "cat_views_1d"] == 2
    assert rows.loc[("c1", "coffee"), "cat_carts_30m"] == 1
    assert rows.loc[("c1", "coffee"), "cust_views_30m"] == 1


def test_training_rows_label_purchases_in_the_horizon(history):
    training = build_training_set(history, [CUTOFF], 7, ["coffee", "shoes"], list(FEATURES))
    labels = training.rows.set_index(["customer_id", "category"])["label"].to_dict()
    assert labels == {("c1", "coffee"): 0, ("c1", "shoes"): 1, ("c2", "coffee"): 0, ("c2", "shoes"): 0}
    assert (training.rows["cutoff"] == CUTOFF).all()
    assert training.customers["customer_id"].tolist() == ["c1", "c2"]
    assert training.customers["cust_revenue_7d"].tolist() == [12.0, 0.0]


def test_cutoffs_leave_a_full_horizon_and_refuse_short_histories(history):
    cutoffs = choose_cutoffs(history, 2, 1)
    assert cutoffs == [pd.Timestamp("2025-03-10", tz="UTC"), pd.Timestamp("2025-03-11", tz="UTC")]
    with pytest.raises(ValueError, match="too short"):
        choose_cutoffs(history, 5, 7)


def test_customer_features_equal_the_training_set_customer_table(make_events):
    rng = np.random.default_rng(1)
    events = make_events(
        [
            dict(
                ts=pd.Timestamp("2025-01-01") + pd.Timedelta(minutes=int(m)),
                customer_id=f"c{c}",
                event_type=t,
                category=str(rng.choice(["tea", "shoes"])),
                amount=10.0 if t == "purchase" else None,
            )
            for m, c, t in zip(
                rng.integers(0, 90 * 1440, 400),
                rng.integers(0, 12, 400),
                rng.choice(["product_view", "purchase", "add_to_cart"], 400),
            )
        ]
    )
    cutoffs = choose_cutoffs(events, 3, 7)
    names = [f for f in FEATURES if f.entity == "customer"]
    training = build_training_set(events, cutoffs, 7, ["shoes", "tea"], list(FEATURES))
    assert len(training.customers) > 12 and training.customers["cust_purchases_30d"].gt(0).any()
    pd.testing.assert_frame_equal(customer_features(to_signal_frame(events), cutoffs, names), training.customers)
    with pytest.raises(ValueError, match="customer features only"):
        customer_features(to_signal_frame(events), cutoffs, list(FEATURES))


@pytest.mark.parametrize("n_cutoffs", [5, 130])
def test_a_customer_is_active_from_a_row_turning_visible_until_the_look_back_passes_it(n_cutoffs):
    times = np.arange(n_cutoffs, dtype="int64") * 10 * DAY_SECONDS + 400 * DAY_SECONDS
    year = times[0] - LOOKBACK.start(int(times[0]))
    ts = np.array([times[1] - 1, times[0] - year - 1, times[2] - 5, times[-1] - DAY_SECONDS], dtype="int64")
    visible = np.array([ts[0], ts[1], times[3] + 1, ts[3]], dtype="int64")  # row 2 is linked late
    customer = np.array([0, 1, 2, 3])
    active = find_active(customer, 5, ts, visible, times[::-1].copy())[:, ::-1]  # cutoffs in any order
    expected = np.zeros((5, n_cutoffs), dtype=bool)
    expected[0, 1:] = times[1:] - year <= ts[0]  # from the cutoff after it until it leaves the look-back
    expected[2, 4:] = times[4:] - year <= ts[2]  # only once visible
    expected[3, -1] = True
    assert (active == expected).all()
    assert active[0, 1] and not active[1].any() and not active[4].any()


def test_training_rows_equal_the_features_at_each_cutoff(random_events, monkeypatch):
    monkeypatch.setattr(offline, "CHUNK_ROWS", 60)  # several chunks of whole customers
    cutoffs = choose_cutoffs(random_events, 4, 7)
    built = build_training_set(random_events, cutoffs, 7, CATEGORIES, list(FEATURES))
    training = with_customer_columns(built.rows, built.customers, [f.name for f in FEATURES if f.entity == "customer"])
    frame = to_signal_frame(random_events)
    assert frame["visible"].gt(frame["ts"]).sum() > 10  # anonymous rows linked later are counted from the link
    for cutoff, rows in training.groupby("cutoff"):
        expected = features_at(frame, int(cutoff.timestamp()), rows[["customer_id", "category"]], list(FEATURES))
        np.testing.assert_allclose(
            rows[[f.name for f in FEATURES]].to_numpy(), expected.iloc[:, 2:].to_numpy(), rtol=1e-6, equal_nan=True
        )
    assert training["cutoff"].nunique() == 4 and training["cust_views_30d"].gt(0).mean() > 0.5


def test_a_device_linked_exactly_at_a_cutoff_counts_from_the_next_one(make_events):
    events = make_events(
        [
            dict(ts="2025-03-01 09:00", customer_id="c1", event_type="product_view", category="shoes"),
            dict(ts="2025-03-05 09:00", anonymous_id="tablet", event_type="product_view", category="shoes"),
            dict(ts="2025-03-11 09:00", anonymous_id="tablet", event_type="product_view", category="shoes"),
            dict(ts="2025-03-10 00:00", customer_id="c1", anonymous_id="tablet", event_type="login"),
        ]
    )
    cutoffs = [CUTOFF, CUTOFF + pd.Timedelta(days=7)]
    training = build_training_set(events, cutoffs, 7, ["shoes"], list(FEATURES)).rows.set_index("cutoff")
    assert training["cat_product_views_30d"].tolist() == [1, 3]  # the link at the first cutoff is not before it
    frame = to_signal_frame(events)
    assert [at(frame, [("c1", "shoes")], c).loc[("c1", "shoes"), "cat_product_views_30d"] for c in cutoffs] == [1, 3]


@pytest.mark.parametrize("span", [50, 70_000, 2**33])
@pytest.mark.parametrize("shuffled", [False, True])
def test_rows_are_ordered_by_entity_then_time_as_a_full_sort_orders_them(span, shuffled):
    rng = np.random.default_rng(span)
    ts = np.sort(rng.integers(0, 1000, 5000))  # in time order, with ties
    if shuffled:  # some rows out of time order within their entity
        ts[rng.choice(len(ts), 50, replace=False)] = rng.integers(0, 1000, 50)
    entity = rng.integers(0, span, len(ts)) - span // 2
    order = entity_time_order(entity, ts)
    np.testing.assert_array_equal(order, np.lexsort((ts, entity)))
