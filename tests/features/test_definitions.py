import numpy as np
import pandas as pd
import pytest

from features.definitions import FEATURES_BY_NAME, SIGNAL_NAMES, describe_feature, signal_values


@pytest.mark.parametrize("name, value, category, phrase", [
    ("cat_views_30m", 1, "coffee", "viewed coffee once this session"),
    ("cust_carts_30m", 2, None, "added items to the cart twice this session"),
    ("cust_devices_all", 3, None, "signed in on 3 device(s) so far"),
    ("cust_devices_30d", 1, None, "signed in on 1 device(s) in the last 30 days"),
    ("cat_revenue_30d", 120, "tea", "spent on tea 120 in the last 30 days"),
    ("cust_email_open_rate_90d", 0.25, None, "share of e-mails opened in total: 25% in the last 90 days"),
    ("cat_views_recency_days", 3.2, "tea", "viewed tea 3 days ago"),
    ("cust_devices_all", 0, None, None),
])
def test_features_read_as_marketer_phrases(name, value, category, phrase):
    assert describe_feature(FEATURES_BY_NAME[name], value, category) == phrase


def test_signal_values_follow_the_event_filters():
    events = pd.DataFrame({"event_type": ["purchase", "product_view", "login"], "channel": ["store", "web", "web"],
                           "amount": [12.5, np.nan, np.nan], "offer_id": ["o1", None, None]})
    values = pd.DataFrame(signal_values(events), columns=list(SIGNAL_NAMES))
    assert values.loc[0, ["purchases", "revenue", "offer_purchases", "store_purchases", "store_visits"]].tolist() == \
        [1, 12.5, 1, 1, 1]
    assert values.loc[1, ["views", "product_views", "web_views"]].tolist() == [1, 1, 1]
    assert values.loc[2].eq(0).all() and values["devices"].eq(0).all()  # devices count links, not events


def test_events_outside_the_vocabulary_are_refused():
    with pytest.raises(ValueError, match="event_type outside the schema's vocabulary: teleport"):
        signal_values(pd.DataFrame({"event_type": ["teleport"], "channel": ["web"], "amount": [np.nan]}))
