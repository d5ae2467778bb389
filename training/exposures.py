"""Exposures from the decision log: every served offer (and every control slot) with what followed it.

Each logged slot becomes one row of the table `nbo uplift train` reads (the columns of the simulator's
``raw/exposures.parquet``): control-group slots get ``offer_id = "control"`` and keep the offer the model
intended; treated slots keep the offer shown. Propensities are those of the row's arm and offer, as the
uplift model expects: ``(1 - control share) x`` the slot's logged propensity for treated rows, the control
share for control rows. Outcomes count within ``horizon_days`` of the decision: a click on the slot's offer
(the log's outcomes), a purchase in the offer's category and its revenue, any purchase and its revenue
(purchase events of the raw sources and of the event lake), and the slot's logged purchase-intent probability
(``score``; a control slot's: the intended offer's). ``horizon_complete`` is False while the horizon
has not passed by the data's clock (the latest event, decision or outcome known); those rows are left out of
training.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.identity import stitch_identities
from features.offline import to_seconds
from features.pipeline import read_raw
from nbo.config import Paths
from nbo.units import DAY_SECONDS
from serving.decisions import decision_log_kept, open_decision_log
from training.uplift.model import CONTROL

HORIZON_DAYS = 7
CONTROL_GROUP, TREATMENT_GROUP = "control", "treatment"
PURCHASE_COLUMNS = ["customer_id", "anonymous_id", "ts", "event_type", "category", "amount"]
COLUMNS = [
    "customer_id",
    "offer_id",
    "intended_offer_id",
    "category",
    "ts",
    "channel",
    "propensity",
    "campaign_id",
    "converted",
    "revenue",
    "converted_any",
    "revenue_any",
    "horizon_complete",
    "clicked",
    "group",
    "logged_propensity",
    "explored",
    "decision_id",
    "rank",
    "model_version",
    "score",
]


def read_log(paths: Paths) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The decision log's decisions and its outcomes (empty frames when there is no log); the log shared by
    every replica with $NBO_REDIS_URL."""
    if not decision_log_kept(paths):
        return pd.DataFrame(), pd.DataFrame()
    log = open_decision_log(paths)
    try:
        return log.decisions(), log.logged_outcomes()
    finally:
        log.close()


def read_purchases(paths: Paths) -> pd.DataFrame:
    """Purchases of known customers (``customer_id, ts, category, amount``) from the raw sources and the event
    lake (read_raw: each event once); anonymous purchases count for their device's customer."""
    try:
        events = read_raw(paths, "events", PURCHASE_COLUMNS)
    except FileNotFoundError:
        return pd.DataFrame(
            {"customer_id": [], "ts": pd.Series([], dtype="datetime64[ns, UTC]"), "category": [], "amount": []}
        )
    stitched = stitch_identities(events)  # links need every event; only purchases are kept
    bought = stitched[(stitched["event_type"] == "purchase") & stitched["customer_id"].notna()]
    return bought[["customer_id", "ts", "category", "amount"]].reset_index(drop=True)


def read_offer_categories(paths: Paths) -> pd.Series:
    """Each offer's category, by offer_id (empty when the home has no offers table)."""
    try:
        offers = read_raw(paths, "offers", ["offer_id", "category"])
    except FileNotFoundError:
        return pd.Series(dtype=object)
    return offers.drop_duplicates("offer_id").set_index("offer_id")["category"]


def exposures_from_log(
    paths: Paths,
    horizon_days: int = HORIZON_DAYS,
    as_of: pd.Timestamp | None = None,
    control_share: float | None = None,
) -> pd.DataFrame:
    """The home's decision log as an exposures table (see the module docstring); empty when nothing was served."""
    decisions, outcomes = read_log(paths)
    purchases = read_purchases(paths)
    if as_of is None:
        as_of = data_clock(decisions, outcomes, purchases)
    return build_exposures(
        decisions, outcomes, purchases, read_offer_categories(paths), horizon_days, as_of, control_share
    )


def data_clock(decisions: pd.DataFrame, outcomes: pd.DataFrame, purchases: pd.DataFrame) -> pd.Timestamp:
    """The latest moment the home has data for: its last decision, outcome or purchase."""
    seconds = [int(f["ts"].max()) for f in (decisions, outcomes) if len(f)]
    latest = [pd.Timestamp(s, unit="s", tz="UTC") for s in seconds]
    if len(purchases):
        latest.append(purchases["ts"].max())
    return max(latest) if latest else pd.Timestamp.now(tz="UTC")


def estimate_control_share(groups: pd.Series, decision_ids: pd.Series) -> float:
    """The share of decisions made for the control group."""
    per_decision = groups.groupby(decision_ids.to_numpy()).first()
    return float((per_decision == CONTROL_GROUP).mean()) if len(per_decision) else 0.0


def build_exposures(
    decisions: pd.DataFrame,
    outcomes: pd.DataFrame,
    purchases: pd.DataFrame,
    offer_category: pd.Series,
    horizon_days: int,
    as_of: pd.Timestamp,
    control_share: float | None = None,
) -> pd.DataFrame:
    """Exposure rows of logged slots with their outcomes within the horizon (pure; see the module docstring).
    control_share: the configured share (default: the logged share of control decisions)."""
    if decisions.empty:
        return pd.DataFrame(columns=COLUMNS)
    log = decisions.reset_index(drop=True)
    group = (
        log["group"].fillna(TREATMENT_GROUP) if "group" in log.columns else pd.Series(TREATMENT_GROUP, index=log.index)
    ).astype(str)
    control = (group == CONTROL_GROUP).to_numpy()
    shown = log["offer_id"].astype(object)
    intended = (
        log["intended_offer_id"].astype(object).where(log["intended_offer_id"].notna(), shown)
        if "intended_offer_id" in log.columns
        else shown
    )
    share = estimate_control_share(group, log["decision_id"]) if control_share is None else control_share
    logged = log["propensity"].astype(float).to_numpy()
    target = np.where(control, intended, shown)  # whose category counts as converted
    category = pd.Series(target).map(offer_category).astype(object)
    seconds = log["ts"].astype("int64").to_numpy()
    horizon_s = int(horizon_days * DAY_SECONDS)
    frame = pd.DataFrame(
        {
            "customer_id": log["customer_id"].astype(object),
            "offer_id": np.where(control, CONTROL, shown).astype(object),
            "intended_offer_id": intended.astype(object),
            "category": category,
            "ts": pd.to_datetime(seconds, unit="s", utc=True),
            "channel": log["channel"].astype(object),
            "propensity": np.where(control, share, (1.0 - share) * logged),
            "campaign_id": (
                log["channel"].astype(str) + ":" + pd.to_datetime(seconds, unit="s", utc=True).strftime("%Y-%m-%d")
            ).to_numpy(),
        }
    )
    converted, revenue = sum_purchases(purchases, frame["customer_id"], category, seconds, horizon_s)
    converted_any, revenue_any = sum_purchases(purchases, frame["customer_id"], None, seconds, horizon_s)
    frame = frame.assign(
        converted=converted,
        revenue=revenue,
        converted_any=converted_any,
        revenue_any=revenue_any,
        horizon_complete=seconds + horizon_s <= int(as_of.timestamp()),
        clicked=find_clicks(log, outcomes, horizon_s) & ~control,
        group=group.to_numpy(),
        logged_propensity=logged,
        explored=log["explored"].fillna(0).astype(bool).to_numpy(),
        decision_id=log["decision_id"].astype(object),
        rank=log["rank"].astype("int64"),
        model_version=log["model_version"].astype(object),
        score=log["score"].astype(float) if "score" in log.columns else np.nan,
    )
    return frame[COLUMNS]


def sum_purchases(
    purchases: pd.DataFrame, customers: pd.Series, categories: pd.Series | None, starts_s: np.ndarray, horizon_s: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: whether the customer bought (in the category, when given) in [start, start + horizon), and the
    amounts' sum. Rows without a category buy nothing in it."""
    keys_of = [purchases["customer_id"].astype(str)]
    wanted = [customers.astype(str)]
    if categories is not None:
        keys_of.append(purchases["category"].astype(str))
        wanted.append(categories.astype(str))
    bought_key = pd.MultiIndex.from_arrays(keys_of) if len(keys_of) > 1 else pd.Index(keys_of[0])
    row_key = pd.MultiIndex.from_arrays(wanted) if len(wanted) > 1 else pd.Index(wanted[0])
    uniques = bought_key.unique()
    bought = uniques.get_indexer(bought_key)
    rows = uniques.get_indexer(row_key)
    if categories is not None:
        rows = np.where(categories.isna().to_numpy(), -1, rows)
    when = to_seconds(purchases["ts"]) if len(purchases) else np.zeros(0, "int64")
    span = 10**11  # seconds: keys never overlap before the year 5000
    keys = bought.astype("int64") * span + when
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    cum = np.concatenate([[0.0], np.cumsum(np.nan_to_num(purchases["amount"].to_numpy(dtype=float))[order])])
    starts = rows.astype("int64") * span + starts_s
    lo = np.searchsorted(keys, starts, side="left")
    hi = np.searchsorted(keys, starts + horizon_s, side="left")
    found = (rows >= 0) & (hi > lo)
    return found, np.where(found, np.round(cum[hi] - cum[lo], 2), 0.0)


def find_clicks(log: pd.DataFrame, outcomes: pd.DataFrame, horizon_s: int) -> np.ndarray:
    """Per slot: whether a click on its offer (or on its decision, when the click names no offer) came back
    within the horizon."""
    if outcomes.empty:
        return np.zeros(len(log), dtype=bool)
    clicks = outcomes[outcomes["event_type"] == "offer_click"]
    slots = log[["decision_id", "offer_id", "ts"]].reset_index().rename(columns={"ts": "shown"})
    joined = slots.merge(clicks.rename(columns={"offer_id": "clicked_offer"}), on="decision_id")
    hit = (
        (joined["clicked_offer"].isna() | (joined["clicked_offer"] == joined["offer_id"]))
        & (joined["ts"] >= joined["shown"])
        & (joined["ts"] < joined["shown"] + horizon_s)
    )
    found = np.zeros(len(log), dtype=bool)
    found[joined.loc[hit, "index"].to_numpy()] = True
    return found
