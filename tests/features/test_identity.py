import numpy as np
import pandas as pd

from features.identity import first_links, link_devices, stitch_identities


def test_anonymous_browsing_joins_the_customer_from_the_login_on(make_events):
    events = make_events(
        [
            dict(ts="2025-03-01 09:00", anonymous_id="phone", event_type="product_view", category="shoes"),
            dict(ts="2025-03-01 09:05", anonymous_id="phone", event_type="add_to_cart", category="shoes"),
            dict(ts="2025-03-02 20:00", anonymous_id="laptop", customer_id="c1", event_type="login"),
            dict(ts="2025-03-03 08:00", anonymous_id="phone", customer_id="c1", event_type="email_click"),
            dict(ts="2025-03-04 08:00", anonymous_id="phone", event_type="page_view"),
            dict(ts="2025-03-04 09:00", anonymous_id="tablet", event_type="page_view"),
        ]
    )
    stitched = stitch_identities(events)
    assert stitched["customer_id"].tolist()[:5] == ["c1"] * 5
    assert pd.isna(stitched["customer_id"].iloc[5])  # a device never linked stays anonymous
    link = pd.Timestamp("2025-03-03 08:00", tz="UTC")
    assert (stitched["visible_at"].iloc[:2] == link).all()  # known only once linked
    assert stitched["visible_at"].iloc[4] == stitched["ts"].iloc[4]


def test_a_shared_device_belongs_to_its_first_customer(make_events):
    events = make_events(
        [
            dict(ts="2025-03-01", anonymous_id="family-tablet", customer_id="mum", event_type="login"),
            dict(ts="2025-03-05", anonymous_id="family-tablet", customer_id="son", event_type="login"),
        ]
    )
    assert link_devices(events).set_index("anonymous_id")["customer_id"].to_dict() == {"family-tablet": "mum"}


def test_a_device_links_at_its_earliest_event_with_a_customer_the_first_listed_on_a_tie():
    device = np.array([0, 1, 0, 1, 0, -1, 2, 1])
    has_customer = np.array([True, True, True, True, False, True, False, True])
    ts = np.array([50, 30, 20, 10, 5, 1, 0, 10])
    # device 0: rows 0 and 2 carry a customer, row 2 is earlier; device 1: rows 3 and 7 tie at 10, row 3 is
    # listed first; row 4 has no customer, row 5 no device, device 2 never carries a customer
    assert first_links(device, has_customer, ts).tolist() == [3, 2]  # in time order
