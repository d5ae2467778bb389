import pandas as pd

from training.uplift.model import live_offers

NOW = pd.Timestamp("2026-03-01", tz="UTC")


def test_an_empty_validity_bound_is_open_and_a_closed_one_is_kept():
    offers = pd.DataFrame(
        {
            "offer_id": ["open", "started", "ended", "later", "app_only"],
            "valid_from": [None, "2026-02-01", "2026-01-01", "2026-04-01", None],
            "valid_to": [None, None, "2026-02-01", None, None],
            "channels": ["web|email", "email", "email", "email", "app"],
        }
    )
    assert live_offers(offers, "email", NOW)["offer_id"].tolist() == ["open", "started"]


def test_no_live_offer_keeps_the_columns():
    offers = pd.DataFrame({"offer_id": ["a"], "valid_from": [None], "valid_to": [None], "channels": ["app"]})
    live = live_offers(offers, "email", NOW)
    assert live.empty and list(live.columns) == list(offers.columns)
