"""The evaluation report: the model and its baselines side by side on the test cutoff, per segment, against
the simulator's oracle when there is one, with plots; a JSON-ready dict."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from features.pipeline import read_raw
from features.segments import (
    ACTIVITY_TIERS,
    TIER_FEATURES,
    VALUE_TIERS,
    activity_tier,
    value_thresholds,
    value_tier,
)
from features.training_set import with_customer_columns
from nbo.config import Paths
from simulator.generate import load_truth
from training.calibration import reliability_bins
from training.dataset import Split, to_matrix
from training.evaluate import (
    category_popularity,
    cumulative_gain,
    fit_logistic,
    fit_recency_frequency,
    margin_metrics,
    popularity_scores,
    ranking_metrics,
    recency_frequency,
    score_metrics,
)
from training.pyfunc import LoadedModel, predict_proba, predict_uncalibrated

PREFIXES = {
    "lightgbm": "test",
    "lightgbm_uncalibrated": "test_uncalibrated",
    "popularity": "baseline_popularity",
    "recency_frequency": "baseline_recency_frequency",
    "logistic": "baseline_logistic",
}
SEGMENT_METRICS = ("auc", "pr_auc", "ece", "ndcg_at_3", "hit_rate_at_3")


def score_models(
    split: Split, model: LoadedModel, matrices: dict[str, np.ndarray] | None = None, logistic: bool = True
) -> dict[str, np.ndarray]:
    """Test-row probabilities of the model (calibrated and raw) and of baselines fitted on the training rows
    (the logistic regression, the costliest to fit, only when ``logistic``).

    ``matrices`` ("train", "test"): the model inputs of those rows when the caller has built them already."""
    declared, categories = model.meta["declared_features"], model.meta["categories"]
    matrices = matrices or {
        part: to_matrix(getattr(split, part), split.customers, declared, categories) for part in ("train", "test")
    }
    test = matrices["test"]
    popularity = category_popularity(split.train)
    heuristic = fit_recency_frequency(split.train, popularity)
    heuristic_inputs = recency_frequency(split.test, popularity).reshape(-1, 1)
    scores = {
        "lightgbm": predict_proba(model, test),
        "lightgbm_uncalibrated": predict_uncalibrated(model, test),
        "popularity": popularity_scores(split.test, popularity),
        "recency_frequency": heuristic.predict_proba(heuristic_inputs)[:, 1],
    }
    if logistic:
        scores["logistic"] = fit_logistic(matrices["train"], split.train["label"].to_numpy()).predict_proba(test)[:, 1]
    return scores


def offer_values(offers: pd.DataFrame, rows: pd.DataFrame, at: pd.Timestamp) -> np.ndarray:
    """Value of the best offer valid at a time in each row's category (0 where none is)."""
    valid = offers_valid_at(offers, at)
    return rows["category"].map(valid.groupby("category")["value"].max()).fillna(0.0).to_numpy(dtype="float64")


def offers_valid_at(offers: pd.DataFrame, at: pd.Timestamp) -> pd.DataFrame:
    """Offers whose validity covers a moment, in any channel."""
    started = offers["valid_from"].isna() | (offers["valid_from"] <= at)
    not_ended = offers["valid_to"].isna() | (offers["valid_to"] >= at)
    return offers[started & not_ended]


def measure_segments(rows: pd.DataFrame, scores: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per activity tier and value tier (from the rows' customer features): size, positive rate and
    each model's metrics (None where a segment holds a single class)."""
    customers = rows.drop_duplicates("customer_id")["cust_revenue_365d"]
    tiers = {
        "activity_tier": (activity_tier(rows).to_numpy(), ACTIVITY_TIERS),
        "value_tier": (value_tier(rows["cust_revenue_365d"], value_thresholds(customers)).to_numpy(), VALUE_TIERS),
    }
    out: dict[str, dict] = {}
    for kind, (tier, names) in tiers.items():
        out[kind] = {}
        for name in (n for n in names if (tier == n).any()):
            mask = tier == name
            part = rows[mask]
            single = part["label"].nunique() < 2
            out[kind][str(name)] = {
                "customers": int(part["customer_id"].nunique()),
                "rows": int(mask.sum()),
                "positive_rate": float(part["label"].mean()),
                "models": {
                    m: {
                        k: (None if single else v)
                        for k, v in measure_model(part, s[mask]).items()
                        if k in SEGMENT_METRICS
                    }
                    for m, s in scores.items()
                },
            }
    return out


def measure_model(rows: pd.DataFrame, scores: np.ndarray, values: np.ndarray | None = None) -> dict[str, float]:
    """Classification, calibration and ranking metrics of one model's scores (and margin, given values)."""
    labels = rows["label"].to_numpy()
    single = len(np.unique(labels)) < 2
    metrics = {} if single else {k.removeprefix("m_"): v for k, v in score_metrics(labels, scores, "m").items()}
    metrics |= ranking_metrics(rows, scores)
    return metrics | (margin_metrics(rows, scores, values) if values is not None else {})


def oracle_share(
    paths: Paths, rows: pd.DataFrame, scores: dict[str, np.ndarray], offers: pd.DataFrame, at: pd.Timestamp
) -> dict[str, object] | None:
    """Share of the oracle's true expected value that each policy's single best offer per customer captures.

    The oracle picks the valid offer with the highest true p(purchase with the offer) x value; a policy
    picks by its predicted category probability x value. None without the simulator's truth."""
    if not (paths.raw / "truth.parquet").exists():
        return None
    valid = offers_valid_at(offers, at)[["offer_id", "category", "value"]]
    customers = rows["customer_id"].unique()
    pairs = pd.DataFrame({"customer_id": np.repeat(customers, len(valid))}).assign(
        **{c: np.tile(valid[c].to_numpy(), len(customers)) for c in valid.columns}
    )
    truth = load_truth(paths.raw)
    true_value = (
        truth.purchase_probability(pairs["customer_id"], pairs["offer_id"], np.full(len(pairs), at), with_offer=True)
        * pairs["value"].to_numpy()
    )
    where = pd.MultiIndex.from_frame(rows[["customer_id", "category"]]).get_indexer(
        pd.MultiIndex.from_frame(pairs[["customer_id", "category"]])
    )
    best = pd.Series(true_value).groupby(pairs["customer_id"].to_numpy()).max().sum()
    share = {}
    for name, s in scores.items():
        picks = pd.DataFrame(
            {
                "customer_id": pairs["customer_id"],
                "offer_id": pairs["offer_id"],
                "ev": np.where(where >= 0, s[where], 0.0) * pairs["value"].to_numpy(),
                "true": true_value,
            }
        )
        picks = picks.sort_values(["customer_id", "ev", "offer_id"], ascending=[True, False, True], kind="stable")
        share[name] = float(picks.drop_duplicates("customer_id")["true"].sum() / best)
    share["random"] = float(pd.Series(true_value).groupby(pairs["customer_id"].to_numpy()).mean().sum() / best)
    return {"customers": int(len(customers)), "offers": int(len(valid)), "share": share}


def build_report(
    paths: Paths, split: Split, model: LoadedModel, matrices: dict[str, np.ndarray] | None = None, logistic: bool = True
) -> dict[str, object]:
    """The full evaluation of a model against its baselines on the split's test cutoff (``matrices``,
    ``logistic``: as in ``score_models``)."""
    rows = split.test.reset_index(drop=True)
    at = pd.Timestamp(rows["cutoff"].iloc[0])
    scores = score_models(split, model, matrices, logistic)
    offers = read_raw(paths, "offers")
    values = offer_values(offers, rows, at)
    labels = rows["label"].to_numpy()
    importance = pd.Series(model.booster.feature_importance("gain"), index=model.booster.feature_name())
    gain = {name: cumulative_gain(labels, s) for name, s in scores.items()}
    return {
        "model_version": model.version,
        "test_cutoff": at.isoformat(),
        "rows": len(rows),
        "customers": int(rows["customer_id"].nunique()),
        "positive_rate": float(labels.mean()),
        "models": {name: measure_model(rows, s, values) for name, s in scores.items()},
        "segments": measure_segments(with_customer_columns(rows, split.customers, TIER_FEATURES), scores),
        "oracle": oracle_share(paths, rows, scores, offers, at),
        "curves": {
            "reliability": {
                n: {k: v.tolist() for k, v in reliability_bins(labels, s).items()} for n, s in scores.items()
            },
            "gain": {"x": next(iter(gain.values()))[0].tolist(), **{n: g[1].tolist() for n, g in gain.items()}},
        },
        "feature_importance": importance.sort_values(ascending=False).head(20).to_dict(),
    }


def flatten_metrics(report: dict) -> dict[str, float]:
    """The report's numbers as MLflow metric names (test_auc, baseline_popularity_ndcg_at_3, ...)."""
    out = {f"{PREFIXES[m]}_{k}": v for m, metrics in report["models"].items() for k, v in metrics.items()}
    for tiers in report["segments"].values():
        out |= {
            f"segment_{tier}_{k}": v
            for tier, seg in tiers.items()
            for k, v in seg["models"]["lightgbm"].items()
            if v is not None
        }
    if report["oracle"]:
        out |= {f"oracle_share_{name}": v for name, v in report["oracle"]["share"].items()}
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(v)}


def draw_figures(report: dict) -> dict[str, Figure]:
    """Feature importance, calibration curve, cumulative gain and metrics per segment; legends beside the axes,
    never over the data."""
    figures = {
        name: Figure(figsize=(9, 5), layout="constrained")
        for name in ("feature_importance", "calibration_curve", "cumulative_gain", "segment_metrics")
    }
    ax = figures["feature_importance"].subplots()
    importance = pd.Series(report["feature_importance"]).iloc[::-1]
    ax.barh(importance.index, importance.to_numpy())
    ax.set(title="LightGBM feature importance (gain, top 20)", xlabel="total gain")
    ax.tick_params(axis="y", labelsize=7)
    ax = figures["calibration_curve"].subplots()
    ax.plot([0, 1], [0, 1], "k:", label="perfect")
    for name, curve in report["curves"]["reliability"].items():
        ece = report["models"][name].get("ece", float("nan"))
        ax.plot(curve["predicted"], curve["observed"], "o-", label=f"{name} (ECE {ece:.4f})")
    top = max(max(c["predicted"] + c["observed"]) for c in report["curves"]["reliability"].values())
    ax.set(
        title="Calibration on the test cutoff (equal-count bins)",
        xlabel="mean predicted probability",
        ylabel="observed purchase rate",
        xlim=(0, top * 1.05),
        ylim=(0, top * 1.05),
    )
    figures["calibration_curve"].legend(loc="outside right upper", fontsize=8)
    ax = figures["cumulative_gain"].subplots()
    x = report["curves"]["gain"]["x"]
    ax.plot(x, x, "k:", label="random")
    for name in report["models"]:
        ax.plot(x, report["curves"]["gain"][name], label=name)
    ax.set(
        title="Cumulative gain on the test cutoff", xlabel="share of rows, by score", ylabel="share of purchases found"
    )
    figures["cumulative_gain"].legend(loc="outside right upper", fontsize=8)
    draw_segments(figures["segment_metrics"], report)
    return figures


def draw_segments(figure: Figure, report: dict) -> None:
    """Grouped bars of AUC and NDCG@3 per segment and model."""
    segments = [(kind, tier) for kind, tiers in report["segments"].items() for tier in tiers]
    names = [n for n in report["models"] if n != "lightgbm_uncalibrated"]
    width = 0.8 / len(names)
    for ax, metric in zip(figure.subplots(2, 1, sharex=True), ("auc", "ndcg_at_3")):
        for i, name in enumerate(names):
            heights = [report["segments"][k][t]["models"][name].get(metric) or 0.0 for k, t in segments]
            ax.bar(np.arange(len(segments)) + i * width, heights, width, label=name)
        ax.set(ylabel=metric)
        ax.set_xticks(np.arange(len(segments)) + 0.4 - width / 2, [t for _, t in segments])
    figure.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize=8)
    figure.suptitle("Metrics per segment (activity tier, value tier)")
