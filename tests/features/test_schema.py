"""Event validation refuses implausible values row by row, each with its reason."""

from __future__ import annotations

import pandas as pd
import pytest

from features.schema import validate_events

NOW = pd.Timestamp("2025-06-01T12:00:00Z")
GOOD = {
    "event_id": None,
    "ts": "2025-06-01T10:00:00Z",
    "customer_id": "c1",
    "channel": "web",
    "event_type": "purchase",
    "amount": "12.5",
    "category": "tea",
}


def reason_of(**changes) -> tuple[str, str] | None:
    """The (field, reason) that quarantines GOOD with `changes`, or None when it is accepted."""
    raw = pd.DataFrame([{**GOOD, **changes}])
    accepted, quarantine = validate_events(
        raw, "test", now=NOW, known_offers={"o1"}, known_decisions={"d1"}, known_categories={"tea", "coffee"}
    )
    assert len(accepted) + len(quarantine) == 1
    return None if quarantine.empty else (quarantine.loc[0, "field"], quarantine.loc[0, "reason"])


@pytest.mark.parametrize("amount", ["Infinity", "inf", "-inf", "1e309", float("inf")])
def test_amounts_must_be_finite(amount):
    assert reason_of(amount=amount) == ("amount", "amount must be a finite number")


def test_amounts_and_quantities_have_a_plausible_maximum():
    assert reason_of(amount="9999999") is None
    assert reason_of(amount="2e7") == ("amount", "must be <= 1e+07")
    assert reason_of(quantity="5e6") == ("quantity", "must be <= 1e+06")


@pytest.mark.parametrize("amount", ["NaN", "nan"])
def test_nan_text_is_not_an_amount(amount):
    assert reason_of(amount=amount) == ("amount", "not a valid float: ['" + amount + "']")


@pytest.mark.parametrize(
    "ts, reason",
    [
        ("0001-01-01T00:00:00Z", "timestamp before 1990-01-01"),
        ("1677-09-22T00:00:00Z", "timestamp before 1990-01-01"),
        ("1989-12-31T23:59:59Z", "timestamp before 1990-01-01"),
        ("2025-06-01T12:06:00Z", "timestamp is in the future"),
        ("\uff12\uff10\uff12\uff15-06-01", "not a valid timestamp: ['\uff12\uff10\uff12\uff15-06-01']"),
        ("2025-06-01T10:00:00Z\x00", "not a valid timestamp: ['2025-06-01T10:00:00Z\\x00']"),
    ],
)
def test_timestamps_must_be_ascii_iso_and_in_a_plausible_window(ts, reason):
    assert reason_of(ts=ts) == ("ts", reason)


@pytest.mark.parametrize(
    "ts",
    [
        "2025-06-01",
        "2025-06-01T10:00Z",
        "2025-06-01 10:00:00.123+02:00",
        "1990-01-01T00:00:00Z",
        "2025-06-01T12:04:00Z",
    ],
)
def test_iso_timestamps_in_the_window_are_accepted(ts):
    assert reason_of(ts=ts) is None


@pytest.mark.parametrize(
    "field",
    [
        "customer_id",
        "anonymous_id",
        "event_id",
        "item_id",
        "offer_id",
        "decision_id",
        "session_id",
        "campaign_id",
        "category",
    ],
)
@pytest.mark.parametrize("character", ["\x00", "\n", "\x1b", "\x7f"])
def test_ids_must_not_hold_control_characters(field, character):
    assert reason_of(**{field: f"o{character}1"}) == (field, f"{field} contains a control character")


@pytest.mark.parametrize(
    "field, value, reason",
    [
        ("offer_id", "o2", "unknown offer"),
        ("decision_id", "d2", "unknown decision (not served by /recommend)"),
        ("category", "shoes", "unknown category (in no item or offer)"),
    ],
)
def test_unknown_offers_decisions_and_categories_are_refused(field, value, reason):
    assert reason_of(**{field: {"offer_id": "o1", "decision_id": "d1", "category": "coffee"}[field]}) is None
    assert reason_of(**{field: value}) == (field, reason)


def test_known_values_are_checked_only_when_given():
    raw = pd.DataFrame([{**GOOD, "offer_id": "o9", "decision_id": "d9", "category": "shoes"}])
    accepted, quarantine = validate_events(raw, "test", now=NOW)
    assert len(accepted) == 1 and quarantine.empty
