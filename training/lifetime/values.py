"""Lifetime value per customer from the retailer's own purchases and behaviour; it feeds the value tiers.

The repeat-purchase model of ``training/lifetime/model.py`` is fitted on the stitched purchase events. The declared
customer features (browsing, e-mail, carts, store visits, ...) at each cutoff, point in time, are its
covariates. Examples are taken at ``end - horizon``, labelled over the last ``horizon`` days, and at
monthly cutoffs before that. The model then scores every buyer at the end of the data for the next
``horizon`` days. A 50/50 split of customers measures it first: buys-again AUC, RMSE of purchase days,
total error, and the share of the holdout spend made by the top tenth of customers, ranked by predicted
value against ranked by past revenue.

Each fit is registered as a version of ``nbo-lifetime-value`` (its predictions and value tiers, its report);
it becomes champion, and its tiers ``HOME/lifetime.parquet``, when its buys-again AUC on the holdout is at least
the champion's on the same rows (RMSE of purchase days when the AUC is undefined), else challenger. The model is
refitted at every prediction date, so what a version carries is its method (the boosters' parameters) and its
predictions: the champion is measured by refitting its method on the same training half.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from features.definitions import FEATURES
from features.identity import link_devices, stitch_identities
from features.offline import customer_features, to_signal_frame
from features.pipeline import read_raw
from features.segments import TIER_COLUMNS, latest_tiers, value_thresholds, value_tier
from features.training_set import read_customer_features
from nbo.config import Paths
from nbo.units import DAY
from training.champions import (
    ARTIFACT,
    LIFETIME,
    REPORT_FILE,
    TIERS_FILE,
    Installed,
    current_champion,
    fetch_champion,
    register_version,
)
from training.lifetime.model import (
    CLASSIFIER_PARAMS,
    REGRESSOR_PARAMS,
    Covariates,
    build_labels,
    build_training_set,
    fit_lifetime_model,
    predict_repeat_purchases,
)
from training.registry import connect, run_tags

EXPERIMENT = "nbo-lifetime"
HORIZON_DAYS = 90
MIN_HISTORY_DAYS = 28
CUSTOMER_FEATURES = [f for f in FEATURES if f.entity == "customer"]
GATE_METRICS = (("holdout_auc", True), ("holdout_rmse", False))  # the first defined for both judges; higher better?
EVENT_COLUMNS = ["customer_id", "anonymous_id", "ts", "event_type", "channel", "category", "offer_id", "amount"]


def purchase_transactions(events: pd.DataFrame) -> pd.DataFrame:
    """Purchases as ``customer_id, ts, amount``, anonymous ones attributed to their device's customer."""
    links = link_devices(events[["customer_id", "anonymous_id", "ts"]])
    purchases = events.loc[events["event_type"] == "purchase", ["customer_id", "anonymous_id", "ts", "amount"]]
    stitched = stitch_identities(purchases, links)
    tx = stitched.loc[stitched["customer_id"].notna(), ["customer_id", "ts", "amount"]]
    return tx.assign(customer_id=tx["customer_id"].astype(str), amount=tx["amount"].fillna(0.0)).reset_index(drop=True)


def behaviour_at(events: pd.DataFrame, cutoffs: list[pd.Timestamp]) -> Covariates:
    """The declared customer features at each of ``cutoffs`` (computed once, point in time), as covariates."""
    table = customer_features(to_signal_frame(events), sorted(set(cutoffs)), CUSTOMER_FEATURES)
    table = table.assign(customer_id=table["customer_id"].astype(str))
    by_cutoff = {
        pd.Timestamp(c): part.drop(columns="cutoff").set_index("customer_id") for c, part in table.groupby("cutoff")
    }
    nobody = pd.DataFrame(columns=[f.name for f in CUSTOMER_FEATURES], index=pd.Index([], name="customer_id"))

    def at(cutoff: pd.Timestamp) -> pd.DataFrame:
        if cutoff not in cutoffs:
            raise KeyError(f"no behaviour computed at {cutoff}")
        return by_cutoff.get(cutoff, nobody)  # nobody active in the year before it

    return at


@dataclass(frozen=True)
class Plan:
    """When the model learns and predicts: labels over ``[label_cutoff, end)``, rows from the earlier
    monthly ``extra`` cutoffs too, then predictions from ``end`` for ``horizon`` days."""

    end: pd.Timestamp
    horizon: int
    extra: list[pd.Timestamp]

    @property
    def label_cutoff(self) -> pd.Timestamp:
        return self.end - self.horizon * DAY

    @property
    def cutoffs(self) -> list[pd.Timestamp]:
        """Every cutoff at which the model reads features."""
        return [self.end, self.label_cutoff, *self.extra]


def plan_cutoffs(tx: pd.DataFrame, horizon_days: int = HORIZON_DAYS) -> Plan:
    """The end of the data, the horizon (at most half the history) and the earlier monthly cutoffs."""
    if tx.empty:
        raise ValueError("lifetime value needs purchases with a customer id; the events hold none")
    first, end = tx["ts"].min().floor("D"), tx["ts"].max().floor("D") + DAY
    horizon = min(horizon_days, (end - first).days // 2)
    if horizon < MIN_HISTORY_DAYS // 2:
        raise ValueError(
            f"lifetime value needs at least {MIN_HISTORY_DAYS} days of purchases, the events span {(end - first).days}"
        )
    label_cutoff = end - horizon * DAY
    extra = [label_cutoff - k * 30 * DAY for k in range(1, 6) if label_cutoff - k * 30 * DAY >= first + 30 * DAY]
    return Plan(end, horizon, extra)


def measure_holdout(
    tx: pd.DataFrame, plan: Plan, seed: int = 0, covariates: Covariates | None = None, method: dict | None = None
) -> dict[str, float]:
    """Fit on half of the customers, score the other half on the last ``horizon`` days (method: the boosters'
    parameters, fit_lifetime_model's keywords)."""
    cutoff, horizon = plan.label_cutoff, plan.horizon
    ids = np.sort(tx["customer_id"].unique())
    test = set(np.random.default_rng(seed).permutation(ids)[len(ids) // 2 :])
    is_test = tx["customer_id"].isin(test).to_numpy()
    data = build_training_set(
        tx[~is_test], cutoff, horizon, plan.extra, history=tx[tx["ts"] < cutoff], covariates=covariates
    )
    model = fit_lifetime_model(data, seed=seed, **(method or {}))
    pred = predict_repeat_purchases(model, tx[is_test], cutoff, horizon, covariates)
    held = tx[is_test & (tx["ts"] >= cutoff).to_numpy()]
    actual = build_labels(held, cutoff, horizon).reindex(pred.index, fill_value=0).to_numpy(dtype="float64")
    spend = held.groupby("customer_id")["amount"].sum().reindex(pred.index, fill_value=0.0)
    past = tx[is_test & (tx["ts"] >= cutoff - 365 * DAY).to_numpy() & (tx["ts"] < cutoff).to_numpy()]
    revenue = past.groupby("customer_id")["amount"].sum().reindex(pred.index, fill_value=0.0)
    error = pred["expected_purchases"].to_numpy() - actual
    metrics = {
        "holdout_customers": float(len(pred)),
        "holdout_auc": float("nan"),
        "holdout_rmse": float(np.sqrt(np.mean(error**2))),
        "holdout_mae": float(np.mean(np.abs(error))),
        "holdout_total_error": float(pred["expected_purchases"].sum() / max(actual.sum(), 1.0) - 1.0),
        "top10_spend_share_by_value": top_share(pred["expected_value"], spend),
        "top10_spend_share_by_revenue": top_share(revenue, spend),
    }
    if 0 < (actual > 0).sum() < len(actual):
        metrics["holdout_auc"] = float(roc_auc_score(actual > 0, pred["p_buy_again"]))
    return metrics


def top_share(score: pd.Series, spend: pd.Series, fraction: float = 0.1) -> float:
    """Share of the spend made by the ``fraction`` of customers with the highest score."""
    top = score.sort_values(ascending=False, kind="stable").index[: max(1, int(round(fraction * len(score))))]
    return float(spend.loc[top].sum() / spend.sum()) if spend.sum() > 0 else float("nan")


def predict_lifetime(
    tx: pd.DataFrame, plan: Plan, seed: int = 0, covariates: Covariates | None = None, method: dict | None = None
) -> pd.DataFrame:
    """Every buyer's expected purchases, P(buys again) and value over the next ``horizon`` days, and value tier
    (by expected purchases when the purchases carry no amounts)."""
    data = build_training_set(tx, plan.label_cutoff, plan.horizon, plan.extra, covariates=covariates)
    model = fit_lifetime_model(data, seed=seed, **(method or {}))
    pred = predict_repeat_purchases(model, tx, plan.end, plan.horizon, covariates)
    value = pred["expected_value"] if (pred["expected_value"] > 0).any() else pred["expected_purchases"]  # no prices
    pred["value_tier"] = value_tier(value, value_thresholds(value))
    return pred.rename_axis("customer_id").reset_index().assign(horizon_days=plan.horizon, as_of=plan.end)


def describe_method(regressor_params: dict | None = None, classifier_params: dict | None = None) -> dict:
    """The boosters' parameters a fit uses: the defaults with these overrides."""
    return {
        "regressor_params": {**REGRESSOR_PARAMS, **(regressor_params or {})},
        "classifier_params": {**CLASSIFIER_PARAMS, **(classifier_params or {})},
    }


def judge_lifetime(
    champion: Installed | None, method: dict, metrics: dict[str, float], measure: Callable[[dict], dict[str, float]]
) -> dict:
    """The gate: the new fit's holdout metric against the champion's method measured on the same rows (measure
    refits a method on this fit's training half and scores its holdout half). It passes without a champion, when
    the champion's method cannot be measured, or when it is at least as good."""
    if champion is None:
        return {"promoted": True, "reason": "no champion"}
    before_method = json.loads((champion.folder / REPORT_FILE).read_text()).get("method")
    try:
        before = metrics if before_method == method else measure(before_method or {})
    except (TypeError, ValueError) as error:  # a method this code cannot fit
        return {"promoted": True, "reason": f"the champion's method cannot be measured: {error}"}
    name, higher = next(
        ((m, up) for m, up in GATE_METRICS if np.isfinite(metrics[m]) and np.isfinite(before[m])), GATE_METRICS[-1]
    )
    value, champion_value = metrics[name], before[name]
    promoted = bool(value >= champion_value if higher else value <= champion_value)
    return {
        "promoted": promoted,
        "metric": name,
        "value": value,
        "champion_value": champion_value,
        "champion_version": champion.version,
        "reason": f"{'at least as good as' if promoted else 'worse than'} champion v{champion.version} on the "
        f"same holdout ({name} {value:.4f} against {champion_value:.4f})",
    }


def fit_lifetime(
    paths: Paths,
    horizon_days: int = HORIZON_DAYS,
    seed: int = 0,
    regressor_params: dict | None = None,
    classifier_params: dict | None = None,
) -> dict[str, object]:
    """Measure and fit every customer's lifetime value, log the run to MLflow and register it: champion (its
    tiers written to HOME/lifetime.parquet) when it passes the gate, else challenger."""
    events = read_raw(paths, "events", EVENT_COLUMNS)
    tx = purchase_transactions(events)
    plan = plan_cutoffs(tx, horizon_days)
    behaviour = behaviour_at(events, plan.cutoffs)
    del events
    method = describe_method(regressor_params, classifier_params)
    metrics = measure_holdout(tx, plan, seed, behaviour, method)

    def measure(other: dict) -> dict[str, float]:
        return measure_holdout(tx, plan, seed, behaviour, other)

    gate = judge_lifetime(fetch_champion(paths, LIFETIME), method, metrics, measure)
    lifetime = predict_lifetime(tx, plan, seed, behaviour, method)
    connect(paths, EXPERIMENT)
    span = f"{tx['ts'].min().date()}..{plan.end.date()}"
    params = {"horizon_days": plan.horizon, "as_of": plan.end.isoformat(), "purchases": len(tx), "seed": seed}
    with mlflow.start_run(run_name=f"lifetime {span}", tags=run_tags(span, len(CUSTOMER_FEATURES))) as run:
        mlflow.log_params({**method["regressor_params"], **params, "behaviour_features": len(CUSTOMER_FEATURES)})
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        mlflow.set_tags({"promoted": str(gate["promoted"]).lower(), "gate_reason": gate["reason"]})
        mlflow.log_dict(lifetime["value_tier"].value_counts().to_dict(), "value_tiers.json")
        with tempfile.TemporaryDirectory() as folder:
            lifetime.to_parquet(Path(folder) / TIERS_FILE, index=False)
            report = {"params": params, "method": method, "metrics": metrics, "gate": gate}
            (Path(folder) / REPORT_FILE).write_text(json.dumps(report, indent=1))
            mlflow.log_artifacts(folder, ARTIFACT)
    version = register_version(paths, LIFETIME, run.info.run_id, gate["promoted"])
    return {
        "customers": len(lifetime),
        "file": str(paths.lifetime),
        "tiers": lifetime["value_tier"].value_counts().to_dict(),
        "version": version,
        "promoted": gate["promoted"],
        "gate": gate,
        "run_id": run.info.run_id,
        **metrics,
    }


def read_tiers(paths: Paths) -> pd.DataFrame | None:
    """Each customer's activity and value tier in a home (the lifetime-value champion's tiers once `nbo train` has
    registered one, else by 365-day revenue); None before `nbo features`."""
    if not paths.training_set.with_suffix(".json").exists():
        return None
    current_champion(paths, LIFETIME)  # the registry's champion installed, if it moved
    known = paths.lifetime.exists()
    lifetime = pd.read_parquet(paths.lifetime, columns=["customer_id", "value_tier"]) if known else None
    return latest_tiers(read_customer_features(paths.training_set, TIER_COLUMNS), lifetime)
