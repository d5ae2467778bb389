"""Held-out evaluation of an uplift model: Qini and uplift@k (IPS-weighted), and the off-policy value
(IPS, SNIPS, doubly robust) of targeting policies under a contact budget, with customer-bootstrap confidence
intervals; the model's gains over the best single offer and over random targeting are measured per bootstrap
replicate, so their intervals are paired.

Policy values are incremental: the outcome gained per exposure row (customer and campaign) over sending
nothing. When control rows carry the offer they would have received (``offer`` set by prepare_exposures),
the outcome is taken as offer-specific, and a control row counts for policy offer o with weight
1 / (P(control) x q(o)), q being the logging policy's chance of drawing o for that customer, estimated from
the customer's logged propensities in the offer's group (category, else the offer itself). The doubly robust
value is the model's predicted value of the policy plus the IPS estimate of its prediction errors."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from training.uplift.model import UpliftModel, UpliftSpec, build_matrix

TrueUplift = Callable[[np.ndarray, np.ndarray, pd.Series], np.ndarray]
K_SHARES = (0.1, 0.3)
BASELINES = ("best_single_offer", "random")  # the policies targeting by the model must beat (gains x estimator)
GRID = np.linspace(0.01, 1.0, 100)


def draw_bootstrap_weights(customer_ids: pd.Series, n_boot: int, seed: int) -> np.ndarray:
    """Poisson(1) weights per customer (rows of a customer move together), one row per replicate."""
    codes, uniques = pd.factorize(customer_ids)
    draws = np.random.default_rng(seed).poisson(1.0, (n_boot, len(uniques))).astype(float)
    return draws[:, codes]


def summarise_bootstrap(point: dict[str, float], replicates: list[dict[str, float]]) -> dict[str, dict]:
    """Each metric as value with a 95% percentile interval."""
    out = {}
    for key, value in point.items():
        samples = np.array([r[key] for r in replicates], dtype=float)
        low, high = np.nanpercentile(samples, [2.5, 97.5]) if len(samples) else (np.nan, np.nan)
        out[key] = {"value": float(value), "low": float(low), "high": float(high)}
    return out


def measure_ranking(score: np.ndarray, y: np.ndarray, treated: np.ndarray, weight: np.ndarray) -> dict[str, float]:
    """Qini coefficient (area between the uplift curve and random targeting, per row) and uplift@k."""
    order = np.argsort(-score, kind="stable")
    w, t, yy = weight[order], treated[order], y[order]
    wt, wc = np.cumsum(w * t), np.cumsum(w * (1 - t))
    yt, yc = np.cumsum(w * t * yy), np.cumsum(w * (1 - t) * yy)
    with np.errstate(divide="ignore", invalid="ignore"):
        at = np.maximum(np.ceil(GRID * len(order)).astype(int) - 1, 0)
        gain = GRID * (yt[at] / wt[at] - yc[at] / wc[at])
        metrics = {"qini": float(np.nanmean(gain - GRID * gain[-1]))}
        for k in K_SHARES:
            cut = int(round(k * len(order))) - 1
            metrics[f"uplift_top{int(k * 100)}"] = float(yt[cut] / wt[cut] - yc[cut] / wc[cut])
            metrics[f"uplift_rest{int(k * 100)}"] = float(
                (yt[-1] - yt[cut]) / (wt[-1] - wt[cut]) - (yc[-1] - yc[cut]) / (wc[-1] - wc[cut])
            )
    return metrics


def split_exposures(
    frame: pd.DataFrame, by: str = "time", holdout: float = 0.25, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and held-out rows: the last campaigns (by="time") or a random share of customers."""
    if by == "time":
        order = frame.groupby("campaign")["ts"].min().sort_values().index
        test_keys = set(order[len(order) - max(1, round(holdout * len(order))) :])
        test = frame["campaign"].isin(test_keys)
    elif by == "customer":
        ids = frame["customer_id"].unique()
        chosen = np.random.default_rng(seed).random(len(ids)) < holdout
        test = frame["customer_id"].isin(ids[chosen])
    else:
        raise ValueError(f"split must be 'time' or 'customer', got {by!r}")
    if test.all() or not test.any():
        hint = (
            "the log has one campaign date: use --split customer"
            if by == "time"
            else "use more customers or a --holdout between 0 and 1"
        )
        raise ValueError(f"the {by} split with --holdout {holdout} leaves no training or no held-out rows ({hint})")
    return frame[~test].reset_index(drop=True), frame[test].reset_index(drop=True)


def choose_split(
    frame: pd.DataFrame, by: str = "time", holdout: float = 0.25, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Training and held-out rows, and the split used: a time split of a log with a single campaign date holds
    out customers instead (``--split customer``); holdout 0 holds out nothing."""
    if not 0 <= holdout < 1:
        raise ValueError(f"--holdout must be a fraction in [0, 1), got {holdout}")
    if by == "time" and frame["campaign"].nunique() < 2:
        by = "customer"
    if holdout == 0:
        return frame, frame.iloc[:0], by
    return (*split_exposures(frame, by, holdout, seed), by)


def build_offer_grid(frame: pd.DataFrame) -> tuple[pd.Index, np.ndarray]:
    """All offers seen, and per row which of them its campaign offered (True = available)."""
    offers = pd.Index(sorted(frame["offer"].dropna().astype(str).unique()))
    seen = frame.dropna(subset=["offer"]).groupby("campaign")["offer"].unique()
    by_campaign = {c: offers.isin(v.astype(str)) for c, v in seen.items()}
    empty = np.zeros(len(offers), dtype=bool)
    return offers, np.vstack([by_campaign.get(c, empty) for c in frame["campaign"]])


def predict_grid(
    values: Callable[[np.ndarray, np.ndarray, pd.Series], np.ndarray],
    frame: pd.DataFrame,
    offers: pd.Index,
    available: np.ndarray,
) -> np.ndarray:
    """A rows x offers matrix of values(customer, offer, ts) on available pairs, NaN elsewhere."""
    rows, cols = np.nonzero(available)
    grid = np.full(available.shape, np.nan)
    grid[rows, cols] = values(
        frame["customer_id"].to_numpy()[rows], offers.to_numpy()[cols], frame["ts"].iloc[rows].reset_index(drop=True)
    )
    return grid


def estimate_intended_share(
    frame: pd.DataFrame,
    offers: pd.Index,
    available: np.ndarray,
    groups: pd.Series,
    history: pd.DataFrame,
    floor: float = 0.1,
) -> np.ndarray:
    """Per row, the logging policy's estimated chance of drawing each available offer (rows sum to 1).

    Score of (customer, offer) = mean log propensity of the customer's offer rows in the offer's group,
    else the offer's mean log propensity in the campaign; normalised over the campaign's offers.
    """
    treated = history[history["treated"]].assign(
        group=lambda f: f["offer"].map(groups).fillna(f["offer"]), logp=lambda f: np.log(f["propensity"])
    )
    personal = treated.groupby(["customer_id", "group"])["logp"].mean()
    campaign = treated.groupby(["campaign", "offer"])["logp"].quantile(floor)
    rows, cols = np.nonzero(available)
    offer_ids = offers.to_numpy()[cols]
    group_ids = pd.Series(offer_ids).map(groups).fillna(pd.Series(offer_ids)).to_numpy()
    keys = pd.MultiIndex.from_arrays([frame["customer_id"].to_numpy()[rows], group_ids])
    score = personal.reindex(keys).to_numpy()
    fallback = campaign.reindex(pd.MultiIndex.from_arrays([frame["campaign"].to_numpy()[rows], offer_ids]))
    score = np.where(np.isnan(score), fallback.to_numpy(), score)
    grid = np.zeros(available.shape)
    grid[rows, cols] = np.exp(np.nan_to_num(score, nan=np.nanmin(score)))
    return grid / np.maximum(grid.sum(axis=1, keepdims=True), 1e-300)


def build_policies(uplift: np.ndarray, campaigns: pd.Series, budget: float) -> dict[str, np.ndarray]:
    """Rows x offers contact probabilities of three policies contacting `budget` of each campaign's rows:
    the model's best offer to its top rows, random offers to random rows, the best single offer to random rows."""
    available = ~np.isnan(uplift)
    n_avail = np.maximum(available.sum(axis=1, keepdims=True), 1)
    best = np.nanargmax(np.where(available, uplift, -np.inf), axis=1)
    best_value = uplift[np.arange(len(best)), best]
    model = np.zeros(uplift.shape)
    single = np.zeros(uplift.shape)
    for _, rows in pd.Series(np.arange(len(campaigns))).groupby(campaigns.to_numpy()):
        index = rows.to_numpy()
        top = index[np.argsort(-best_value[index], kind="stable")[: int(round(budget * len(index)))]]
        model[top, best[top]] = 1.0
        counts = available[index].sum(axis=0)
        means = np.where(counts > 0, np.nan_to_num(uplift[index]).sum(axis=0) / np.maximum(counts, 1), -np.inf)
        single[index, np.argmax(means)] = budget
    return {"model": model, "random": budget * available / n_avail, "best_single_offer": single}


def build_oracle(truth: np.ndarray, campaigns: pd.Series, budget: float) -> np.ndarray:
    """The best possible policy at the budget, from true uplift."""
    return build_policies(truth, campaigns, budget)["model"]


def pick_row_offer(grid: np.ndarray, column: np.ndarray, missing: float = 0.0) -> np.ndarray:
    """Each row's value at its own offer column (missing where the row has none)."""
    return np.where(column >= 0, grid[np.arange(len(column)), np.maximum(column, 0)], missing)


def value_policy(
    policy: np.ndarray,
    column: np.ndarray,
    treated: np.ndarray,
    propensity: np.ndarray,
    share: np.ndarray | None,
    y: np.ndarray,
    weight: np.ndarray,
    truth: np.ndarray | None,
    direct: np.ndarray | None = None,
    residual: np.ndarray | None = None,
) -> dict[str, float]:
    """IPS and SNIPS estimates of the policy's incremental outcome per row (and its true value); with ``direct``
    (rows x offers predicted uplift) and ``residual`` (outcome minus its prediction in the row's own arm), the
    doubly robust estimate too: the predicted value plus the IPS estimate of the prediction's error.

    share: per control row, the estimated chance that the logging policy drew its intended offer;
    None when control rows carry no offer (the outcome is then not offer-specific)."""
    chosen = pick_row_offer(policy, column)
    contact = policy.sum(axis=1)
    t = treated.astype(bool)
    w0 = np.where(t, 0.0, contact / propensity if share is None else chosen / (propensity * np.maximum(share, 1e-6)))
    w1 = np.where(t, chosen / propensity, 0.0)
    total = weight.sum()
    treated_mean = (weight * w1 * y).sum() / max((weight * w1).sum(), 1e-12)
    control_mean = (weight * w0 * y).sum() / max((weight * w0).sum(), 1e-12)
    out = {
        "ips": float((weight * (w1 - w0) * y).sum() / total),
        "snips": float((weight * contact).sum() / total * (treated_mean - control_mean)),
    }
    if direct is not None and residual is not None:
        predicted = np.nansum(policy * np.nan_to_num(direct), axis=1)
        out["dr"] = float((weight * (predicted + (w1 - w0) * np.nan_to_num(residual))).sum() / total)
    if truth is not None:
        out["true"] = float((weight * np.nansum(policy * np.nan_to_num(truth), axis=1)).sum() / total)
    return out


def predict_arms(
    model: UpliftModel,
    customers: pd.DataFrame,
    offer_table: pd.DataFrame,
    frame: pd.DataFrame,
    offers: pd.Index,
    available: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows x offers predicted outcome with each available offer and without it (NaN where not available)."""
    rows, cols = np.nonzero(available)
    ids, offer_ids = frame["customer_id"].to_numpy()[rows], offers.to_numpy()[cols]
    ts = frame["ts"].iloc[rows].reset_index(drop=True)
    spec = model.spec
    treated_inputs = build_matrix(spec, customers, offer_table, ids, offer_ids, ts)
    control_inputs = (
        treated_inputs if spec.control_by_offer else build_matrix(spec, customers, offer_table, ids, None, ts)
    )
    grids = []
    for booster, inputs in ((model.treated, treated_inputs), (model.control, control_inputs)):
        grid = np.full(available.shape, np.nan)
        grid[rows, cols] = booster.predict(inputs, num_threads=2)
        grids.append(grid)
    return grids[0], grids[1]


def arm_residual(
    y: np.ndarray, treated: np.ndarray, column: np.ndarray, with_offer: np.ndarray, without: np.ndarray
) -> np.ndarray:
    """Outcome minus its predicted value in the row's own arm (its offer's column; control rows without an
    offer: the row's control prediction, the same in every column)."""
    own = np.where(
        treated.astype(bool), pick_row_offer(with_offer, column, np.nan), pick_row_offer(without, column, np.nan)
    )
    known = (~np.isnan(without)).sum(axis=1)
    row_control = np.where(known > 0, np.nansum(without, axis=1) / np.maximum(known, 1), np.nan)
    return y - np.where(np.isnan(own), row_control, own)


def evaluate_uplift(
    model: UpliftModel,
    customers: pd.DataFrame,
    offer_table: pd.DataFrame,
    test: pd.DataFrame,
    budget: float = 0.3,
    true_uplift: TrueUplift | None = None,
    history: pd.DataFrame | None = None,
    n_boot: int = 100,
    seed: int = 0,
) -> dict[str, dict]:
    """Ranking and policy metrics on held-out rows, each with a bootstrap 95% interval.

    history: logged rows to learn the logging policy's offer choice from (default: the held-out rows);
    propensities are not outcomes, so all rows may be used."""
    if not 0 < budget <= 1:
        raise ValueError(f"budget must be a fraction in (0, 1], got {budget}")
    offers, available = build_offer_grid(test)
    with_offer, without = predict_arms(model, customers, offer_table, test, offers, available)
    return evaluate_predictions(
        test,
        offers,
        available,
        with_offer,
        without,
        model.spec,
        offer_table,
        budget,
        true_uplift,
        history,
        n_boot,
        seed,
    )


def evaluate_predictions(
    test: pd.DataFrame,
    offers: pd.Index,
    available: np.ndarray,
    with_offer: np.ndarray,
    without: np.ndarray,
    spec: UpliftSpec,
    offer_table: pd.DataFrame,
    budget: float = 0.3,
    true_uplift: TrueUplift | None = None,
    history: pd.DataFrame | None = None,
    n_boot: int = 100,
    seed: int = 0,
) -> dict[str, dict]:
    """evaluate_uplift's metrics from predicted outcomes with and without each offer (rows x offers, see
    predict_arms) by models of this spec, each row's predictions from a model that did not see it."""
    y = test[spec.outcome].astype(float).to_numpy()
    t = test["treated"].to_numpy().astype(float)
    arm_weight = 1.0 / test["arm_propensity"].to_numpy()
    control_by_offer = spec.control_by_offer
    predicted = with_offer - without
    column = offers.get_indexer(test["offer"].astype(object).where(test["offer"].notna(), None))
    score = pick_row_offer(predicted, column, np.nan) if control_by_offer else np.nanmean(predicted, axis=1)
    residual = arm_residual(y, t, column, with_offer, without)
    truth = predict_grid(true_uplift, test, offers, available) if true_uplift else None
    groups = offer_table["category"] if "category" in offer_table.columns else pd.Series(dtype=object)
    share = (
        pick_row_offer(
            estimate_intended_share(test, offers, available, groups, test if history is None else history), column
        )
        if control_by_offer
        else None
    )
    policies = build_policies(predicted, test["campaign"], budget)
    if truth is not None:
        policies["oracle"] = build_oracle(truth, test["campaign"], budget)
        row_truth = pick_row_offer(truth, column, np.nan)
    propensity = test["propensity"].to_numpy()

    def measure(weight: np.ndarray) -> dict[str, float]:
        metrics = measure_ranking(score, y, t, weight * arm_weight)
        for name, policy in policies.items():
            found = value_policy(policy, column, t, propensity, share, y, weight, truth, predicted, residual)
            metrics |= {f"{name}_{key}": value for key, value in found.items() if name != "oracle" or key == "true"}
        for baseline in BASELINES:
            metrics |= {
                f"model_gain_over_{baseline}_{key}": metrics[f"model_{key}"] - metrics[f"{baseline}_{key}"]
                for key in ("ips", "snips", "dr")
            }
        if truth is not None:
            ok = ~np.isnan(row_truth)
            cov = np.cov(score[ok], row_truth[ok], aweights=weight[ok])
            metrics["true_uplift_corr"] = float(cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1]))
        return metrics

    replicates = [measure(w) for w in draw_bootstrap_weights(test["customer_id"], n_boot, seed + 1)]
    return summarise_bootstrap(measure(np.ones(len(test))), replicates)
