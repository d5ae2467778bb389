"""The programme's incremental revenue and conversions: treatment against the global control group
(serving.rules.ControlGroup), overall and per channel, offer, activity tier, value tier and ISO week.

The unit is a customer with a decision in the period, counted from their first decision in it (for the channel
breakdown: their first decision in that channel). Their outcomes are their purchases within the horizon after
that decision: revenue (sum of amounts) and conversion (bought at all). Customers whose horizon has not ended by
the end of the data are left out (counted as ``incomplete``). Group membership is random and fixed before the
first decision, so per cell the difference of the per-customer means, treatment minus control, estimates the
effect of being treated; its 95 % interval is the normal approximation with unpooled (Welch) standard errors.
The incremental total of a cell is that difference times its treated customers, with the interval scaled alike.

The offer of a customer is the model's first choice at their first decision (``intended_offer_id`` of slot 0:
shown to the treatment group, withheld from the control group), so both sides of an offer's row are alike.
Weeks and tiers split the customers (their rows add up to the overall counts and sums); a customer reached on
several channels counts in each channel's row. The activity tier is the customer's at the last cutoff of the
training set at or before their first decision (before the offers could change it; "unknown" before the first
cutoff), the value tier the home's latest (training.lifetime.values.read_tiers).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from features.segments import TIER_COLUMNS, activity_tier
from nbo.config import Paths
from nbo.units import DAY_SECONDS

HORIZON_DAYS = 7
Z95 = 1.959963984540054
BREAKDOWNS = ("channel", "offer", "activity_tier", "value_tier", "week")
METRICS = ("revenue", "converted")
UNKNOWN = "unknown"


class NoDecisions(ValueError):
    """Nothing to measure: no decision in the period."""


def read_purchases(paths: Paths) -> tuple[pd.DataFrame, pd.Timestamp | None]:
    """Every purchase (customer_id, ts in epoch seconds, amount) in the home's events (raw files and the event
    lake, each event once) and the time of the last event of any kind (None without events)."""
    from features.pipeline import read_raw

    try:
        events = read_raw(paths, "events", ["customer_id", "ts", "event_type", "amount"])
    except FileNotFoundError:
        return pd.DataFrame({"customer_id": [], "ts": [], "amount": []}), None
    end = events["ts"].max() if len(events) else None
    bought = events[(events["event_type"] == "purchase") & events["customer_id"].notna()]
    purchases = pd.DataFrame(
        {
            "customer_id": bought["customer_id"].astype(str).to_numpy(),
            "ts": epoch_seconds(bought["ts"]),
            "amount": bought["amount"].fillna(0.0).to_numpy(),
        }
    )
    return purchases, end


def epoch_seconds(times: pd.Series) -> np.ndarray:
    """UTC timestamps as integer epoch seconds."""
    return ((pd.to_datetime(times, utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "s")).to_numpy("int64")


def first_decisions(decisions: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """The first decision (slot 0) of each customer, or of each customer and ``by`` columns: customer_id, ts,
    group, channel, offer (the model's first choice)."""
    slots = decisions.loc[decisions["rank"] == 0, ["customer_id", "ts", "group", "channel", "intended_offer_id"]]
    first = slots.loc[slots.groupby(["customer_id", *by], sort=False)["ts"].idxmin()]  # ties: the first logged
    return pd.DataFrame(
        {
            "customer_id": first["customer_id"].astype(str).to_numpy(),
            "ts": first["ts"].to_numpy("int64"),
            "group": first["group"].fillna("treatment").to_numpy(),
            "channel": first["channel"].to_numpy(),
            "offer": first["intended_offer_id"].fillna(UNKNOWN).to_numpy(),
        }
    )


def add_outcomes(units: pd.DataFrame, purchases: pd.DataFrame, horizon_s: int) -> pd.DataFrame:
    """The units with their revenue and conversion: purchases at or after the unit's decision, within the
    horizon."""
    keyed = units.reset_index(drop=True).rename_axis("unit").reset_index()
    joined = keyed[["unit", "customer_id", "ts"]].merge(purchases, on="customer_id", suffixes=("", "_bought"))
    inside = joined[(joined["ts_bought"] >= joined["ts"]) & (joined["ts_bought"] < joined["ts"] + horizon_s)]
    revenue = inside.groupby("unit")["amount"].sum()
    keyed["revenue"] = revenue.reindex(keyed["unit"]).fillna(0.0).to_numpy()
    keyed["converted"] = keyed["unit"].isin(revenue.index).astype("float64")
    return keyed.drop(columns="unit")


def difference(treated: np.ndarray, control: np.ndarray) -> dict[str, float | None]:
    """Mean of treated minus mean of control, with the 95 % normal-approximation interval (Welch standard error);
    None where a side has fewer than two customers."""
    if len(treated) < 2 or len(control) < 2:
        return {"value": None, "low": None, "high": None}
    diff = float(treated.mean() - control.mean())
    se = math.sqrt(treated.var(ddof=1) / len(treated) + control.var(ddof=1) / len(control))
    return {"value": diff, "low": diff - Z95 * se, "high": diff + Z95 * se}


def scaled(found: dict[str, float | None], factor: float) -> dict[str, float | None]:
    """An estimate and its interval times a factor."""
    return {k: None if v is None else v * factor for k, v in found.items()}


def compare(units: pd.DataFrame) -> dict:
    """A cell: customers and sums per group, and per metric the per-customer difference and the incremental
    total (difference x treated customers), each with its 95 % interval."""
    treated, control = units[units["group"] == "treatment"], units[units["group"] == "control"]
    cell: dict[str, Any] = {"treatment": len(treated), "control": len(control)}
    for metric in METRICS:
        t, c = treated[metric].to_numpy("float64"), control[metric].to_numpy("float64")
        per_customer = difference(t, c)
        cell[metric] = {
            "treatment_sum": float(t.sum()),
            "control_sum": float(c.sum()),
            "treatment_mean": float(t.mean()) if len(t) else None,
            "control_mean": float(c.mean()) if len(c) else None,
            "per_customer": per_customer,
            "incremental": scaled(per_customer, len(t)),
        }
    return cell


def iso_week(ts: pd.Series) -> pd.Series:
    """The ISO week (e.g. 2026-W49) of epoch seconds."""
    calendar = pd.to_datetime(ts, unit="s", utc=True).dt.isocalendar()
    return calendar["year"].astype(str) + "-W" + calendar["week"].astype(str).str.zfill(2)


def breakdown(units: pd.DataFrame, column: str) -> dict[str, dict]:
    """compare() per value of a column, values in order."""
    return {str(value): compare(part) for value, part in units.groupby(column, sort=True)}


def activity_at_cutoffs(customers: pd.DataFrame) -> pd.DataFrame:
    """Each customer's activity tier at each cutoff of a training set's customer table: customer_id, cutoff
    (epoch seconds), activity_tier."""
    return pd.DataFrame(
        {
            "customer_id": customers["customer_id"].astype(str).to_numpy(),
            "cutoff": epoch_seconds(customers["cutoff"]),
            "activity_tier": activity_tier(customers).to_numpy(),
        }
    )


def tier_before(units: pd.DataFrame, activity: pd.DataFrame) -> np.ndarray:
    """Each unit's activity tier at the last cutoff at or before its decision (UNKNOWN before the first one)."""
    ordered = units[["customer_id", "ts"]].reset_index().sort_values("ts", kind="stable")
    found = pd.merge_asof(
        ordered, activity.sort_values("cutoff"), left_on="ts", right_on="cutoff", by="customer_id", direction="backward"
    )
    return found.set_index("index")["activity_tier"].reindex(units.index).fillna(UNKNOWN).to_numpy()


def measure_performance(
    decisions: pd.DataFrame,
    purchases: pd.DataFrame,
    end: pd.Timestamp | None,
    activity: pd.DataFrame | None = None,
    values: pd.DataFrame | None = None,
    horizon_days: float = HORIZON_DAYS,
    since: pd.Timestamp | None = None,
) -> dict:
    """The report: settings, overall cell, and cells per breakdown (BREAKDOWNS). ``decisions`` as the decision
    log holds them (serving.decisions.DECISION_COLUMNS), ``purchases`` as read_purchases gives them, ``end`` the
    end of the data (horizons must end by it), ``activity`` as activity_at_cutoffs gives it, ``values``
    customer_id, value_tier."""
    start = int(since.timestamp()) if since is not None else None
    period = decisions if start is None else decisions[decisions["ts"] >= start]
    if period.empty:
        raise NoDecisions(
            "the decision log holds no decisions"
            + (f" since {since.isoformat()}" if since else "")
            + ": nothing to measure yet (the service logs one per /recommend)"
        )
    horizon_s = int(horizon_days * DAY_SECONDS)
    last = int(end.timestamp()) if end is not None else int(period["ts"].max())
    units, by_channel = first_decisions(period, []), first_decisions(period, ["channel"])
    complete = units["ts"] + horizon_s <= last
    units = add_outcomes(units[complete], purchases, horizon_s)
    by_channel = add_outcomes(by_channel[by_channel["ts"] + horizon_s <= last], purchases, horizon_s)
    found = len(units) > 0
    units["activity_tier"] = tier_before(units, activity) if activity is not None and found else UNKNOWN
    value_of = (
        pd.Series(values["value_tier"].to_numpy(), index=values["customer_id"].astype(str))
        if values is not None
        else pd.Series(dtype=object)
    )
    units["value_tier"] = units["customer_id"].map(value_of).fillna(UNKNOWN)
    units["week"] = iso_week(units["ts"]) if found else []
    overall = compare(units)
    return {
        "horizon_days": horizon_days,
        "since": since.isoformat() if since is not None else None,
        "end": pd.Timestamp(last, unit="s", tz="UTC").isoformat(),
        "customers": int(len(complete)),
        "incomplete": int((~complete).sum()),
        "control_share": overall["control"] / max(len(units), 1),
        "overall": overall,
        "channel": breakdown(by_channel, "channel"),
        **{kind: breakdown(units, kind) for kind in BREAKDOWNS if kind != "channel"},
    }


def measure_home(
    paths: Paths,
    horizon_days: float = HORIZON_DAYS,
    since: pd.Timestamp | None = None,
    until: pd.Timestamp | None = None,
) -> dict:
    """measure_performance on a home's decision log, events and tiers; ``until`` the end of the data (default:
    the last event's time)."""
    from features.training_set import read_customer_features
    from serving.decisions import decision_log_kept, open_decision_log
    from training.lifetime.values import read_tiers

    if not decision_log_kept(paths):
        raise NoDecisions(f"no decision log at {paths.decisions}: nothing to measure yet (serve /recommend first)")
    log = open_decision_log(paths)
    try:
        decisions = log.decisions(int(since.timestamp()) if since is not None else 0)
    finally:
        log.close()
    purchases, end = read_purchases(paths)
    tiers = read_tiers(paths)
    activity = (
        activity_at_cutoffs(read_customer_features(paths.training_set, TIER_COLUMNS)) if tiers is not None else None
    )
    return measure_performance(decisions, purchases, until or end, activity, tiers, horizon_days, since)
