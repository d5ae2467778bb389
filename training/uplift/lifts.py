"""Offer lifts: how much an offer multiplies the purchase chance of its category, for a kind of customer, from the
logged exposures.

Every logged slot has a baseline, its expected purchases in the category without an offer: the purchase-intent
probability logged with it (a control slot: of the offer the ranking intended), or, for exposures without a score
(a randomised campaign's), the control rows' purchase rate in the category. A Poisson regression with the baseline
as offset (statsmodels' GLM) fits over every row

    log E[purchases] = log baseline + c x scored + treated x (a + b x discount + w . attributes)

c calibrates the logged probabilities: on the control group, and beside exposures without scores also on the
treated rows, through the lifts those exposures anchor; a + b x discount + w . x is the log lift of an offer at
that discount for a customer whose customers-table attributes are x (standardised numeric columns, such as
newsletters per week). Pseudo-rows weigh PRIOR_PURCHASES expected purchases at no effect for each discount level and
at calibration 1, so that a few rows keep the lifts near 1. Each offer's own departure from the lift of its discount
is a factor, its purchases over the purchases the regression expects of its rows, shrunk toward 1 with
OFFER_PRIOR_PURCHASES. One slope over the discount shares the evidence of every offer: far less noise than a lift per
discount level or per offer, and far less than a ratio of two per-row models fitted on a few % of conversions.
The lifts do not know each customer's own answer to offers; they know how a kind of customer answers a discount.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import statsmodels.api as sm

PRIOR_PURCHASES = 20.0  # pseudo-purchases at no effect: per discount level, and for the calibration
OFFER_PRIOR_PURCHASES = 300.0  # an offer's own factor counts once its rows outweigh this many expected purchases
MIN_CONTROL_EXPECTED = 5.0  # control rows' sum of p before the scores are calibrated (the prior weighs 20)
MIN_CONTROL_ROWS = 200  # unscored control rows before their purchase rates serve as baselines
CATEGORY_PRIOR_ROWS = 50.0  # a category's control rate counts once its rows outweigh the overall rate's 50
Z95 = 1.959964


def report_lifts(report: dict) -> dict | None:
    """The lifts an uplift report holds, in the regression's form (None without, or in a form before it)."""
    lifts = report.get("lifts")
    return lifts if lifts and "model" in lifts else None


def find_attributes(customers: pd.DataFrame | None) -> list[str]:
    """The customers table's numeric attribute columns (not flags, not constant) the lifts may depend on."""
    if customers is None:
        return []
    return [
        c
        for c in customers.columns
        if c != "customer_id"
        and pd.api.types.is_numeric_dtype(customers[c])
        and not pd.api.types.is_bool_dtype(customers[c])
        and customers[c].nunique() > 1
    ]


def estimate_baselines(frame: pd.DataFrame, outcome: str) -> tuple[pd.Series, pd.Series, dict]:
    """Each row's expected purchases without an offer, before calibration (NaN: unknown), whether it is a logged
    score, and the category rates used. Rows without a score take the control rows' purchase rate in their
    category, shrunk toward the control rows' overall rate with CATEGORY_PRIOR_ROWS rows, once MIN_CONTROL_ROWS such
    control rows exist. Scores count once the control rows' sum of p reaches MIN_CONTROL_EXPECTED, or beside such
    unscored rows: their lifts then anchor the calibration of the scores on the treated rows too."""
    y, control = frame[outcome].astype(float), ~frame["treated"]
    score = frame["score"].astype(float) if "score" in frame.columns else pd.Series(np.nan, frame.index)
    scored = score.notna() & (score > 0)
    base = pd.Series(np.nan, frame.index)
    rates: dict = {"categories": {}, "overall": None}
    unscored = (~scored & frame["category"].notna()) if "category" in frame.columns else ~scored & False
    found = frame[unscored & control].assign(y=y[unscored & control])
    if len(found) >= MIN_CONTROL_ROWS:
        overall = float(found["y"].mean())
        by_category = found.groupby("category")["y"].agg(["sum", "size"])
        rate = (by_category["sum"] + CATEGORY_PRIOR_ROWS * overall) / (by_category["size"] + CATEGORY_PRIOR_ROWS)
        rates = {"categories": {str(k): float(v) for k, v in rate.items()}, "overall": overall}
        base[unscored] = frame.loc[unscored, "category"].map(rate).fillna(overall)
    if score[scored & control].sum() >= MIN_CONTROL_EXPECTED or (unscored & frame["treated"] & base.notna()).any():
        base[scored] = score[scored]
    else:
        scored[:] = False
    return base.where(base > 0), scored, rates


def apply_baselines(lifts: dict, frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Rows' baselines as the lifts were fitted with (scores, else their category's stored control rate)."""
    score = frame["score"].astype(float) if "score" in frame.columns else pd.Series(np.nan, frame.index)
    scored = score.notna() & (score > 0) & (lifts["calibration"] is not None)
    base = score.where(scored)
    rates = lifts["baseline_rates"]
    if rates["overall"] is not None and "category" in frame.columns:
        unscored = ~scored & frame["category"].notna()
        base[unscored] = frame.loc[unscored, "category"].map(rates["categories"]).fillna(rates["overall"])
    return base.where(base > 0), scored


def standardise(lifts: dict, customers: pd.DataFrame | None, customer_ids: pd.Series | np.ndarray) -> np.ndarray:
    """The lifts' customer attributes of the given customers, standardised (0: the mean, or unknown)."""
    spec = lifts["model"]
    names = spec["attributes"]
    if not names or customers is None:
        return np.zeros((len(customer_ids), len(names)))
    table = customers.drop_duplicates("customer_id").set_index("customer_id")[names].astype(float)
    values = table.reindex(pd.Index(np.asarray(customer_ids, dtype=object))).to_numpy()
    return np.nan_to_num((values - np.array(spec["mean"])) / np.array(spec["scale"]), nan=0.0)


def build_design(scored: np.ndarray, treated: np.ndarray, discount: np.ndarray, attributes: np.ndarray) -> np.ndarray:
    """Columns: scored (the calibration), then treated x (1, discount, attributes...) (the log lift)."""
    t = treated.astype(float)[:, None]
    return np.column_stack([scored.astype(float), t, t * discount[:, None], t * attributes])


def estimate_offer_lifts(
    frame: pd.DataFrame, offer_table: pd.DataFrame, outcome: str, customers: pd.DataFrame | None = None
) -> dict | None:
    """The lift regression (see the module docstring) of prepared exposure rows, its calibration, the lift of
    each discount level at the mean customer and each offer's factor; None when no treated row has a baseline."""
    base, scored, rates = estimate_baselines(frame, outcome)
    usable = base.notna()
    if not (frame["treated"] & usable).any() or not (~frame["treated"] & usable).any():
        return None
    rows = frame[usable]
    y = rows[outcome].astype(float).to_numpy()
    treated = rows["treated"].to_numpy(dtype=bool)
    discounts = offer_table["discount"] if "discount" in offer_table.columns else pd.Series(dtype=float)
    discount = rows["offer"].map(discounts).fillna(0.0).to_numpy(dtype="float64")
    names = find_attributes(customers)
    people = customers.drop_duplicates("customer_id")[names].astype(float) if customers is not None else None
    spec = {
        "attributes": names,
        "mean": [float(people[c].mean()) for c in names] if people is not None else [],
        "scale": [float(people[c].std() or 1.0) for c in names] if people is not None else [],
    }
    attributes = standardise({"model": spec}, customers, rows["customer_id"]) if names else np.zeros((len(rows), 0))
    levels = np.unique(discount[treated])
    has_scores = bool(scored[usable].any())
    prior = build_design(
        np.r_[float(has_scores), np.zeros(len(levels))],
        np.r_[False, np.ones(len(levels), dtype=bool)],
        np.r_[0.0, levels],
        np.zeros((len(levels) + 1, len(names))),
    )
    design = np.vstack([build_design(scored[usable].to_numpy(), treated, discount, attributes), prior])
    varies = [j for j in range(2, design.shape[1]) if np.ptp(design[: len(rows)][treated, j]) > 0]
    kept = [0] * has_scores + [1] + varies  # a column constant over the treated rows would be collinear
    offset = np.log(np.r_[base[usable].to_numpy(), np.full(len(levels) + 1, PRIOR_PURCHASES)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = sm.GLM(
            np.r_[y, np.full(len(levels) + 1, PRIOR_PURCHASES)],
            design[:, kept],
            family=sm.families.Poisson(),
            offset=offset,
        ).fit()
    coef, cov = np.zeros(design.shape[1]), np.zeros((design.shape[1], design.shape[1]))
    coef[kept], cov[np.ix_(kept, kept)] = fit.params, fit.cov_params()
    spec |= {"coef": coef.tolist(), "cov": cov.tolist()}
    calibration = (
        summarise_log(coef[0], cov[0, 0], y[~treated].sum(), base[usable][~treated].sum()) if has_scores else None
    )
    mu = np.exp(design[: len(rows)] @ coef + offset[: len(rows)])
    expected = base[usable].to_numpy() * np.exp(coef[0] * scored[usable].to_numpy())
    return {
        "model": spec,
        "calibration": calibration,
        "baseline_rates": rates,
        "levels": {
            f"{d:g}": summarise_log(
                coef[1] + coef[2] * d,
                cov[1, 1] + d * d * cov[2, 2] + 2 * d * cov[1, 2],
                y[treated & (discount == d)].sum(),
                expected[treated & (discount == d)].sum(),
            )
            for d in levels
        },
        "offers": summarise_offers(rows["offer"].to_numpy()[treated], y[treated], mu[treated], expected[treated]),
        "rows": len(rows),
        "prior_purchases": PRIOR_PURCHASES,
        "offer_prior_purchases": OFFER_PRIOR_PURCHASES,
    }


def summarise_log(eta: float, variance: float, purchases: float, expected: float) -> dict[str, float]:
    """A multiplier exp(eta) with its 95 % interval, and the purchases and expected purchases behind it."""
    spread = Z95 * np.sqrt(max(variance, 0.0))
    return {
        "lift": float(np.exp(eta)),
        "low": float(np.exp(eta - spread)),
        "high": float(np.exp(eta + spread)),
        "purchases": float(purchases),
        "expected": float(expected),
    }


def summarise_offers(offers: np.ndarray, y: np.ndarray, mu: np.ndarray, expected: np.ndarray) -> dict[str, dict]:
    """Each offer's factor beyond its discount's lift (a Gamma posterior: its purchases over those the regression
    expects, shrunk toward 1 with OFFER_PRIOR_PURCHASES) and its purchases and expected purchases without offers."""
    table = pd.DataFrame({"offer": offers, "y": y, "mu": mu, "expected": expected}).groupby("offer", sort=True).sum()
    shape = table["y"] + OFFER_PRIOR_PURCHASES
    factor = shape / (table["mu"] + OFFER_PRIOR_PURCHASES)
    spread = Z95 / np.sqrt(shape)
    return {
        str(o): {
            "factor": float(factor[o]),
            "low": float(factor[o] * np.exp(-spread[o])),
            "high": float(factor[o] * np.exp(spread[o])),
            "purchases": float(table.at[o, "y"]),
            "expected": float(table.at[o, "expected"]),
        }
        for o in table.index
    }


class LiftTable:
    """Lifts for the request path: every offer's part of the log lift and every customer's part computed once
    (customers: the rows of `attributes`, standardised as the lifts were fitted)."""

    def __init__(self, lifts: dict, offer_ids: np.ndarray, discounts: np.ndarray, attributes: np.ndarray):
        spec, own = lifts["model"], lifts["offers"]
        coef, cov = np.array(spec["coef"]), np.array(spec["cov"])
        factor = np.array([own[str(o)]["factor"] if str(o) in own else 1.0 for o in offer_ids])
        self.offer_part = coef[1] + coef[2] * discounts + np.log(factor)
        self.customer_part = attributes @ coef[3:] if attributes.shape[1] else np.zeros(len(attributes))
        self.attributes, self.discounts, self.cov = attributes, discounts, cov[1:, 1:]

    def lift(self, row: int | None, candidates: np.ndarray, bound: str = "lift") -> np.ndarray:
        """The lifts of the candidate offers (positions) for the customer in `row` (None: unknown, the mean one);
        bound "low": the 95 % interval's lower end (the regression's uncertainty)."""
        eta = self.offer_part[candidates] + (self.customer_part[row] if row is not None else 0.0)
        if bound == "low":
            width = self.attributes.shape[1]
            x = np.column_stack(
                [
                    np.ones(len(candidates)),
                    self.discounts[candidates],
                    np.tile(self.attributes[row] if row is not None else np.zeros(width), (len(candidates), 1)),
                ]
            )
            eta = eta - Z95 * np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", x, self.cov, x), 0.0))
        return np.exp(eta)


def expected_purchases(lifts: dict, frame: pd.DataFrame, offer_table: pd.DataFrame, customers: pd.DataFrame | None):
    """Each row's expected purchases under the lifts (with its offer, calibrated baseline; NaN without a baseline)."""
    base, scored = apply_baselines(lifts, frame)
    spec, own = lifts["model"], lifts["offers"]
    discounts = offer_table["discount"] if "discount" in offer_table.columns else pd.Series(dtype=float)
    discount = frame["offer"].map(discounts).fillna(0.0).to_numpy(dtype="float64")
    design = build_design(
        scored.to_numpy(),
        frame["treated"].to_numpy(dtype=bool),
        discount,
        standardise(lifts, customers, frame["customer_id"]),
    )
    factor = frame["offer"].astype(str).map({o: v["factor"] for o, v in own.items()}).fillna(1.0).to_numpy()
    return base.to_numpy() * np.exp(design @ np.array(spec["coef"])) * np.where(frame["treated"], factor, 1.0)


def score_lifts(
    lifts: dict, frame: pd.DataFrame, offer_table: pd.DataFrame, customers: pd.DataFrame | None, outcome: str
) -> np.ndarray:
    """Each row's Poisson log-likelihood (up to a constant) of its purchases under the lifts (NaN: no baseline)."""
    mu = expected_purchases(lifts, frame, offer_table, customers)
    with np.errstate(divide="ignore", invalid="ignore"):
        return frame[outcome].to_numpy(dtype=float) * np.log(mu) - mu
