"""Incremental effect (uplift) of offers learned from exposure logs, and campaign selection under a budget.

Generic input: a customers table (``customer_id`` + attribute columns of any type), optional behavioural
features keyed by ``customer_id``, an optional offers table (``offer_id`` + attributes), and an exposures
table (``customer_id, offer_id`` or ``"control", ts, channel, propensity`` + outcome columns; optional
``intended_offer_id``, the offer a control row would have received, and ``campaign_id``).

A model is two LightGBM models of the outcome, one for treated rows (the offer as a covariate), one for control
rows; uplift(customer, offer) = mu_treated - mu_control. ``fit_uplift`` fits the plain T-learner;
training.uplift.learners holds the learners ``nbo uplift train`` chooses from.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from nbo.units import DAY

CONTROL = "control"
EXPOSURE_COLUMNS = ("customer_id", "offer_id", "ts", "channel", "propensity")
MODEL_PARAMS: dict[str, Any] = {
    "n_estimators": 150,
    "learning_rate": 0.06,
    "num_leaves": 15,
    "min_child_samples": 200,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "reg_lambda": 1.0,
    "max_bin": 63,
    "verbose": -1,
    "n_jobs": 2,
}
SPEC_FILE, TREATED_FILE, CONTROL_FILE = "spec.json", "treated.txt", "control.txt"
CHUNK_CUSTOMERS = 5000


@dataclass
class UpliftSpec:
    """How customer and offer tables become model inputs."""

    outcome: str
    binary: bool
    numeric: list[str]
    datetimes: list[str]
    categories: dict[str, list[str]]
    offer_numeric: list[str]
    control_by_offer: bool
    customer_columns: list[str] = field(default_factory=list)

    @property
    def features(self) -> list[str]:
        """Model input columns, in order."""
        return [*self.numeric, *self.datetimes, *self.categories, *self.offer_numeric]


@dataclass
class UpliftModel:
    """The two outcome models and their input spec."""

    treated: lgb.Booster
    control: lgb.Booster
    spec: UpliftSpec


def validate_inputs(customers: pd.DataFrame, exposures: pd.DataFrame, outcome: str) -> None:
    """Raise ValueError naming the offending column when the tables cannot be used."""
    if "customer_id" not in customers.columns:
        raise ValueError("customers table lacks column 'customer_id'")
    for column in (*EXPOSURE_COLUMNS, outcome):
        if column not in exposures.columns:
            raise ValueError(f"exposures table lacks column '{column}'")
    if not pd.api.types.is_numeric_dtype(exposures[outcome]):
        raise ValueError(f"outcome column '{outcome}' must be numeric or boolean")
    propensity = pd.to_numeric(exposures["propensity"], errors="coerce")
    if not ((propensity > 0) & (propensity <= 1)).all():
        raise ValueError("column 'propensity' must lie in (0, 1] on every row")
    control = exposures["offer_id"] == CONTROL
    if not control.any() or control.all():
        raise ValueError("column 'offer_id' needs both offer rows and 'control' rows")


def prepare_exposures(exposures: pd.DataFrame) -> pd.DataFrame:
    """Complete-horizon rows with ``treated``, ``offer`` (intended offer for control rows when logged),
    ``campaign`` and ``arm_propensity`` (probability of the row's arm: treated or control)."""
    frame = exposures.copy()
    if "horizon_complete" in frame.columns:
        frame = frame[frame["horizon_complete"].astype(bool)]
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    frame["treated"] = frame["offer_id"] != CONTROL
    intended = frame["intended_offer_id"] if "intended_offer_id" in frame.columns else pd.Series(None, frame.index)
    frame["offer"] = frame["offer_id"].where(frame["treated"], intended)
    frame["campaign"] = (
        frame["campaign_id"].astype(str) if "campaign_id" in frame.columns else frame["ts"].dt.strftime("%Y-%m-%d")
    )
    control_share = frame.loc[~frame["treated"]].groupby("campaign")["propensity"].mean()
    fallback = float(frame.loc[~frame["treated"], "propensity"].mean())
    p_control = frame["campaign"].map(control_share).fillna(fallback).astype(float)
    frame["arm_propensity"] = np.where(frame["treated"], 1.0 - p_control, frame["propensity"])
    return frame.reset_index(drop=True)


def build_offer_table(exposures: pd.DataFrame, offers: pd.DataFrame | None) -> pd.DataFrame:
    """Offer attributes indexed by offer_id: ``category`` when known plus the offers table's numbers."""
    if offers is not None:
        table = offers.drop_duplicates("offer_id").set_index("offer_id")
        keep = [
            c
            for c in table.columns
            if c == "category" or (pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c]))
        ]
        return table[keep]
    if "category" in exposures.columns:
        pairs = exposures.assign(o=exposures["offer_id"].where(exposures["offer_id"] != CONTROL))
        return pairs.dropna(subset=["o"]).drop_duplicates("o").set_index("o")[["category"]].rename_axis("offer_id")
    return pd.DataFrame(
        index=pd.Index(exposures.loc[exposures["offer_id"] != CONTROL, "offer_id"].unique(), name="offer_id")
    )


def build_spec(customers: pd.DataFrame, offer_table: pd.DataFrame, frame: pd.DataFrame, outcome: str) -> UpliftSpec:
    """Sort customer and offer columns into numeric, datetime and categorical inputs."""
    numeric, datetimes, categories = [], [], {}
    for column in customers.columns.drop("customer_id"):
        values = customers[column]
        if pd.api.types.is_datetime64_any_dtype(values):
            datetimes.append(column)
        elif pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            numeric.append(column)
        else:
            categories[column] = sorted(values.dropna().astype(str).unique().tolist())
    offer_ids = set(offer_table.index.astype(str)) | set(frame["offer"].dropna().astype(str))
    categories["offer_id"] = sorted(offer_ids)
    if "category" in offer_table.columns:
        categories["offer_category"] = sorted(offer_table["category"].dropna().astype(str).unique().tolist())
    offer_numeric = [c for c in offer_table.columns if c != "category"]
    values = frame[outcome]
    binary = bool(pd.api.types.is_bool_dtype(values) or set(np.unique(values.to_numpy())) <= {0, 1})
    return UpliftSpec(
        outcome,
        binary,
        numeric,
        datetimes,
        categories,
        offer_numeric,
        bool(frame.loc[~frame["treated"], "offer"].notna().all()),
        list(customers.columns),
    )


def join_customers(customers: pd.DataFrame, behaviour: pd.DataFrame | None) -> pd.DataFrame:
    """Customer attributes, left-joined with behavioural features keyed by customer_id when given."""
    if behaviour is None:
        return customers
    if "customer_id" not in behaviour.columns:
        raise ValueError("behavioural features lack column 'customer_id'")
    return customers.merge(
        behaviour.drop_duplicates("customer_id"), on="customer_id", how="left", suffixes=("", "_behaviour")
    )


def build_matrix(
    spec: UpliftSpec,
    customers: pd.DataFrame,
    offer_table: pd.DataFrame,
    customer_ids: pd.Series | np.ndarray,
    offer_ids: pd.Series | np.ndarray | None,
    ts: pd.Series | pd.DatetimeIndex,
) -> np.ndarray:
    """Model inputs for (customer, offer, time) rows; offer inputs are missing when offer_ids is None."""
    people = customers.set_index("customer_id")
    wanted = [*spec.numeric, *spec.datetimes, *(c for c in spec.categories if not c.startswith("offer_"))]
    if missing := [c for c in wanted if c not in people.columns]:
        raise ValueError(f"customer features lack column(s) {missing} the uplift model was trained with")
    rows = people.index.get_indexer(pd.Index(np.asarray(customer_ids, dtype=object)))
    when = pd.DatetimeIndex(pd.to_datetime(ts, utc=True))
    n = len(rows)
    columns: list[np.ndarray] = []

    def take(values: pd.Series, index: np.ndarray) -> pd.Series:
        picked = values.iloc[np.maximum(index, 0)].reset_index(drop=True)
        return picked.where(pd.Series(index >= 0))

    for column in spec.numeric:
        columns.append(take(people[column], rows).astype(float).to_numpy())
    for column in spec.datetimes:
        stamps = pd.DatetimeIndex(pd.to_datetime(take(people[column], rows), utc=True))
        columns.append(np.asarray((when - stamps) / DAY, dtype=float))
    known = offer_ids is not None
    offers = pd.Index(np.asarray(offer_ids if known else [None] * n, dtype=object))
    offer_rows = offer_table.index.get_indexer(offers) if known else np.full(n, -1)
    for column, levels in spec.categories.items():
        if column == "offer_id":
            values = pd.Series(offers)
        elif column == "offer_category":
            values = take(offer_table["category"], offer_rows) if known else pd.Series([None] * n)
        else:
            values = take(people[column], rows)
        columns.append(encode_levels(values, levels))
    for column in spec.offer_numeric:
        columns.append(take(offer_table[column], offer_rows).astype(float).to_numpy() if known else np.full(n, np.nan))
    return np.column_stack(columns) if columns else np.zeros((n, 0))


def encode_levels(values: pd.Series, levels: list[str]) -> np.ndarray:
    """Category codes as floats (NaN for missing or unseen levels)."""
    codes = pd.Categorical(values.astype("string"), categories=levels).codes
    return np.where(codes < 0, np.nan, codes).astype(float)


def fit_uplift(
    customers: pd.DataFrame,
    frame: pd.DataFrame,
    offer_table: pd.DataFrame,
    outcome: str,
    params: dict[str, object] | None = None,
) -> UpliftModel:
    """Fit the treated and control outcome models on prepared exposure rows."""
    spec = build_spec(customers, offer_table, frame, outcome)
    settings = {**MODEL_PARAMS, **(params or {})}
    boosters = []
    for arm in (True, False):
        rows = frame[frame["treated"] == arm]
        offers = rows["offer"] if arm or spec.control_by_offer else None
        matrix = build_matrix(spec, customers, offer_table, rows["customer_id"], offers, rows["ts"])
        learner = lgb.LGBMClassifier(**settings) if spec.binary else lgb.LGBMRegressor(**settings)
        categorical = [i for i, name in enumerate(spec.features) if name in spec.categories]
        learner.fit(matrix, rows[outcome].astype(float).to_numpy(), categorical_feature=categorical)
        boosters.append(learner.booster_)
    return UpliftModel(boosters[0], boosters[1], spec)


def predict_uplift(
    model: UpliftModel,
    customers: pd.DataFrame,
    offer_table: pd.DataFrame,
    customer_ids: pd.Series | np.ndarray,
    offer_ids: pd.Series | np.ndarray,
    ts: pd.Series | pd.DatetimeIndex,
) -> np.ndarray:
    """Predicted outcome with the offer minus without it, one value per row."""
    spec = model.spec
    treated = build_matrix(spec, customers, offer_table, customer_ids, offer_ids, ts)
    control = treated if spec.control_by_offer else build_matrix(spec, customers, offer_table, customer_ids, None, ts)
    return np.asarray(model.treated.predict(treated, num_threads=2)) - np.asarray(
        model.control.predict(control, num_threads=2)
    )


def save_uplift(model: UpliftModel, folder: Path) -> Path:
    """Write the boosters as text and the spec as JSON into folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / TREATED_FILE).write_text(model.treated.model_to_string())
    (folder / CONTROL_FILE).write_text(model.control.model_to_string())
    (folder / SPEC_FILE).write_text(json.dumps(asdict(model.spec), indent=1))
    return folder


def load_uplift(folder: Path) -> UpliftModel:
    """Read a model written by save_uplift (all files from one version of a published folder)."""
    folder = folder.resolve()
    if not (folder / SPEC_FILE).exists():
        raise FileNotFoundError(f"no uplift model in {folder}; train one with `nbo uplift train`")
    spec = UpliftSpec(**json.loads((folder / SPEC_FILE).read_text()))
    return UpliftModel(
        lgb.Booster(model_str=(folder / TREATED_FILE).read_text()),
        lgb.Booster(model_str=(folder / CONTROL_FILE).read_text()),
        spec,
    )


def eligible_customers(customers: pd.DataFrame, channel: str, segment: dict[str, str] | None = None) -> pd.DataFrame:
    """Customers opted in to the channel (``<channel>_opt_in`` when present) and in the segment (column = value)."""
    people = customers
    if f"{channel}_opt_in" in people.columns:
        people = people[people[f"{channel}_opt_in"].astype(bool)]
    for column, value in (segment or {}).items():
        if column not in people.columns:
            raise ValueError(f"segment column '{column}' is not a customer attribute")
        people = people[people[column].astype(str) == value]
    return people


def live_offers(offers: pd.DataFrame, channel: str, now: pd.Timestamp) -> pd.DataFrame:
    """Offers valid at ``now`` (``valid_from``/``valid_to`` when present; an empty bound is open, as in the
    offers schema) and allowed in the channel (``channels``, '|'-joined, when present)."""
    live = offers
    if {"valid_from", "valid_to"} <= set(offers.columns):
        start, end = pd.to_datetime(live["valid_from"], utc=True), pd.to_datetime(live["valid_to"], utc=True)
        live = live[(start.isna() | (start <= now)) & (end.isna() | (end >= now))]
    if "channels" in live.columns:
        allowed = live["channels"].astype(str).str.split("|").map(lambda names: channel in names)
        live = live[allowed.astype(bool)]
    return live


def offer_values(model: UpliftModel, live: pd.DataFrame) -> np.ndarray:
    """What one incremental outcome of each offer is worth: its ``value`` for a binary outcome, else 1."""
    return (
        live["value"].astype(float).to_numpy() if model.spec.binary and "value" in live.columns else np.ones(len(live))
    )


def build_candidates(
    model: UpliftModel,
    customers: pd.DataFrame,
    offers: pd.DataFrame,
    channel: str,
    now: pd.Timestamp,
    segment: dict[str, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[pd.DataFrame, int]:
    """Every eligible (customer, offer) pair with predicted uplift and expected incremental value, and the
    number of eligible customers (see eligible_customers and live_offers). One row per pair: for analysis
    and small cases; campaigns use training.uplift.campaign.score_best_offers."""
    people, live = eligible_customers(customers, channel, segment), live_offers(offers, channel, now)
    value = offer_values(model, live)
    table = offers.drop_duplicates("offer_id").set_index("offer_id")
    parts = [pd.DataFrame(columns=["customer_id", "offer_id", "uplift", "value", "expected_value"])]
    ids = people["customer_id"].to_numpy()
    for first in range(0, len(ids) if len(live) else 0, CHUNK_CUSTOMERS):
        chunk = np.repeat(ids[first : first + CHUNK_CUSTOMERS], len(live))
        offer_ids = np.tile(live["offer_id"].to_numpy(), len(chunk) // len(live))
        uplift = predict_uplift(model, customers, table, chunk, offer_ids, pd.Series(now).repeat(len(chunk)))
        worth = np.tile(value, len(chunk) // len(live))
        parts.append(
            pd.DataFrame(
                {
                    "customer_id": chunk,
                    "offer_id": offer_ids,
                    "uplift": uplift,
                    "value": worth,
                    "expected_value": uplift * worth,
                }
            )
        )
        if progress:
            progress(min(first + CHUNK_CUSTOMERS, len(ids)), len(ids))
    return pd.concat(parts, ignore_index=True), len(ids) if len(live) else 0


def select_campaign(scores: pd.DataFrame, budget: float, n_eligible: int | None = None) -> pd.DataFrame:
    """Each customer's best offer by expected incremental value, positive ones only, best first, at most
    budget x eligible customers (default: the customers in scores)."""
    if not 0 < budget <= 1:
        raise ValueError(f"budget must be a fraction in (0, 1], got {budget}")
    for column in ("customer_id", "offer_id", "expected_value"):
        if column not in scores.columns:
            raise ValueError(f"scores lack column '{column}'")
    eligible = scores["customer_id"].nunique() if n_eligible is None else n_eligible
    best = scores.sort_values("expected_value", ascending=False, kind="stable").drop_duplicates("customer_id")
    best = best[best["expected_value"] > 0]
    return best.head(int(np.floor(budget * eligible))).reset_index(drop=True)
