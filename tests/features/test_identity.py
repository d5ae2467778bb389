import numpy as np
import pandas as pd
import pytest

from features.identity import entity_time_order, first_links, link_devices, stitch_identities


def test_anonymous_browsing_joins_the_customer_from_the_login_on(make_events):
    events = make_events([
        dict(ts="2025-03-01 09:00", anonymous_id="phone", event_type="product_view", category="shoes"),
        dict(ts="2025-03-01 09:05", anonymous_id="phone", event_type="add_to_cart", category="shoes"),
        dict(ts="2025-03-02 20:00", anonymous_id="laptop", customer_id="c1", event_type="login"),
        dict(ts="2025-03-03 08:00", anonymous_id="phone", customer_id="c1", event_type="email_click"),
        dict(ts="2025-03-04 08:00", anonymous_id="phone", event_type="page_view"),
        dict(ts="2025-03-04 09:00", anonymous_id="tablet", event_type="page_view"),
    ])
    stitched = stitch_identities(events)
    assert stitched["customer_id"].tolist()[:5] == ["c1"] * 5
    assert pd.isna(stitched["customer_id"].iloc[5])  # a device never linked stays anonymous
    link = pd.Timestamp("2025-03-03 08:00", tz="UTC")
    assert (stitched["visible_at"].iloc[:2] == link).all()  # known only once linked
    assert stitched["visible_at"].iloc[4] == stitched["ts"].iloc[4]


def test_a_shared_device_belongs_to_its_first_customer(make_events):
    events = make_events([
        dict(ts="2025-03-01", anonymous_id="family-tablet", customer_id="mum", event_type="login"),
        dict(ts="2025-03-05", anonymous_id="family-tablet", customer_id="son", event_type="login"),
    ])
    assert link_devices(events).set_index("anonymous_id")["customer_id"].to_dict() == {"family-tablet": "mum"}


@pytest.mark.parametrize("span", [50, 70_000, 2 ** 33])
@pytest.mark.parametrize("shuffled", [False, True])
def test_rows_are_ordered_by_entity_then_time_as_a_full_sort_orders_them(span, shuffled):
    rng = np.random.default_rng(span)
    ts = np.sort(rng.integers(0, 1000, 5000))  # in time order, with ties
    if shuffled:  # some rows out of time order within their entity
        ts[rng.choice(len(ts), 50, replace=False)] = rng.integers(0, 1000, 50)
    entity = rng.integers(0, span, len(ts)) - span // 2
    order = entity_time_order(entity, ts)
    np.testing.assert_array_equal(order, np.lexsort((ts, entity)))


def test_a_device_links_at_its_earliest_event_with_a_customer_the_first_listed_on_a_tie():
    device = np.array([0, 1, 0, 1, 0, -1, 2, 1])
    has_customer = np.array([True, True, True, True, False, True, False, True])
    ts = np.array([50, 30, 20, 10, 5, 1, 0, 10])
    # device 0: rows 0 and 2 carry a customer, row 2 is earlier; device 1: rows 3 and 7 tie at 10, row 3 is
    # listed first; row 4 has no customer, row 5 no device, device 2 never carries a customer
    assert first_links(device, has_customer, ts).tolist() == [3, 2]  # in time order
