import numpy as np
import pandas as pd
import pytest

from features.aggregates import assemble_features
from features.definitions import DECLARED_WINDOWS, FEATURES, SIGNAL_NAMES, Aggregates, compute_feature, signal_values


def test_signal_values_follow_the_event_filters():
    events = pd.DataFrame(
        {
            "event_type": ["purchase", "product_view", "login"],
            "channel": ["store", "web", "web"],
            "amount": [12.5, np.nan, np.nan],
            "offer_id": ["o1", None, None],
        }
    )
    values = pd.DataFrame(signal_values(events), columns=list(SIGNAL_NAMES))
    assert values.loc[0, ["purchases", "revenue", "offer_purchases", "store_purchases", "store_visits"]].tolist() == [
        1,
        12.5,
        1,
        1,
        1,
    ]
    assert values.loc[1, ["views", "product_views", "web_views"]].tolist() == [1, 1, 1]
    assert values.loc[2].eq(0).all() and values["devices"].eq(0).all()  # devices count links, not events


def test_events_outside_the_vocabulary_are_refused():
    with pytest.raises(ValueError, match="event_type outside the schema's vocabulary: teleport"):
        signal_values(pd.DataFrame({"event_type": ["teleport"], "channel": ["web"], "amount": [np.nan]}))


def test_assembled_features_equal_each_feature_computed_alone():
    rng = np.random.default_rng(0)
    rows, windows, signals = 7, len(DECLARED_WINDOWS), len(SIGNAL_NAMES)
    sums = rng.poisson(2.0, (2, rows, windows, signals)).astype("float64")
    sums[rng.random(sums.shape) < 0.3] = 0.0
    last = rng.integers(0, 10**6, (2, rows, signals)).astype("float64")
    last[rng.random(last.shape) < 0.2] = np.nan
    aggregates = Aggregates(sums[0], last[0], sums[1], last[1])
    t = np.full(rows, 2 * 10**6)
    features = list(FEATURES)[::-1]  # any order
    matrix = assemble_features(features, aggregates, t)
    for j, feature in enumerate(features):
        own = feature.entity == "customer"
        s, last_seen = (sums[0], last[0]) if own else (sums[1], last[1])
        alone = compute_feature(
            feature,
            lambda w, g, s=s: s[:, DECLARED_WINDOWS.index(w), SIGNAL_NAMES.index(g.name)],
            lambda g, last_seen=last_seen: last_seen[:, SIGNAL_NAMES.index(g.name)],
            t,
        )
        np.testing.assert_array_equal(matrix[:, j], alone, err_msg=feature.name)
    assert {f.aggregation for f in features} == {"sum", "recency_days", "ratio", "excess"}


def test_categorical_columns_are_checked_only_on_the_values_they_hold():
    events = pd.DataFrame(
        {
            "event_type": pd.Categorical(["purchase", "login"], categories=["purchase", "login", "x"]),
            "channel": pd.Categorical(["store", "web"]),
            "amount": [5.0, np.nan],
        }
    )
    assert signal_values(events)[:, SIGNAL_NAMES.index("store_purchases")].tolist() == [1, 0]
    events["event_type"] = pd.Categorical(["purchase", "teleport"])
    with pytest.raises(ValueError, match="event_type outside the schema's vocabulary: teleport"):
        signal_values(events)
