"""Pooled offer lifts: how much each offer multiplies the purchase chance of its category, from the decision log.

Every logged slot carries the purchase-intent probability p of its category (a control slot: of the category the
ranking intended), so each row has an expected number of purchases without any offer. Over a set of rows, the
purchases with the offer divided by their expected purchases without it estimate the offer's multiplier: the
rows the ranking chose are comparable because the choice is made on p itself. The control group's rows calibrate
p (their purchases over their sum of p), and every estimate is a Poisson-Gamma posterior shrunk toward its prior
(exposures without scores, from a randomised campaign, take their category's control purchase rate as baseline):

    calibration c   = (control purchases + PRIOR_PURCHASES) / (control sum p + PRIOR_PURCHASES)
    lift(discount)  = (purchases + PRIOR_PURCHASES) / (c x sum p + PRIOR_PURCHASES)    toward 1 (no effect)
    lift(offer)     = (purchases + OFFER_PRIOR_PURCHASES x lift(discount)) / (c x sum p + OFFER_PRIOR_PURCHASES)

over the treated rows of the offers at that discount, then of the offer itself, with 95 % intervals from the
posterior (the calibration's uncertainty included). A lift pooled over an offer's rows does not know each
customer's own answer to offers; it knows the offer's average one, with far less noise than a ratio of two
per-row models fitted on a few % of conversions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PRIOR_PURCHASES = 20.0  # the priors' weight, in expected purchases, of the calibration and the discount levels
OFFER_PRIOR_PURCHASES = 300.0  # an offer's own rows count once they outweigh its discount level's: heavier
MIN_CONTROL_EXPECTED = 5.0  # control rows' sum of p before the scores are calibrated (the prior weighs 20)
MIN_CONTROL_ROWS = 200  # unscored control rows before their purchase rates serve as baselines
CATEGORY_PRIOR_ROWS = 50.0  # a category's control rate counts once its rows outweigh the overall rate's 50
Z95 = 1.959964


def summarise_posterior(
    purchases: float, expected: float, prior: float, weight: float = PRIOR_PURCHASES, calibration_shape: float = np.inf
) -> dict[str, float]:
    """The lift's posterior (Gamma: shape purchases + weight x prior, rate expected + weight): its mean and a 95 %
    interval on the log scale that also carries the calibration's uncertainty (calibration_shape: its posterior's
    shape; a Gamma's relative variance is 1 / shape)."""
    shape, rate = purchases + weight * prior, expected + weight
    spread = Z95 * np.sqrt(1 / shape + 1 / calibration_shape)
    mean = shape / rate
    return {
        "lift": float(mean),
        "low": float(mean * np.exp(-spread)),
        "high": float(mean * np.exp(spread)),
        "purchases": float(purchases),
        "expected": float(expected),
    }


def estimate_baselines(frame: pd.DataFrame, outcome: str) -> tuple[pd.Series, dict | None, float]:
    """Each row's expected purchases without an offer (NaN: unknown), the calibration of the logged scores (None
    when no row is scored or the control rows' sum of p is under MIN_CONTROL_EXPECTED) and the calibration's
    Gamma shape. Rows without a score (a randomised campaign's exposures) take the control rows' purchase rate in
    their category, shrunk toward the control rows' overall rate with CATEGORY_PRIOR_ROWS rows."""
    y, control = frame[outcome].astype(float), ~frame["treated"]
    score = frame["score"].astype(float) if "score" in frame.columns else pd.Series(np.nan, frame.index)
    scored, expected = score.notna(), pd.Series(np.nan, frame.index)
    calibration, shape = None, np.inf
    if score[scored & control].sum() >= MIN_CONTROL_EXPECTED:
        calibration = summarise_posterior(y[scored & control].sum(), score[scored & control].sum(), 1.0)
        expected[scored] = calibration["lift"] * score[scored]
        shape = y[scored & control].sum() + PRIOR_PURCHASES
    unscored = ~scored & frame["category"].notna() if "category" in frame.columns else ~scored & False
    base = frame[unscored & control].assign(y=y[unscored & control])
    if len(base) >= MIN_CONTROL_ROWS:
        overall = base["y"].mean()
        by_category = base.groupby("category")["y"].agg(["sum", "size"])
        rate = (by_category["sum"] + CATEGORY_PRIOR_ROWS * overall) / (by_category["size"] + CATEGORY_PRIOR_ROWS)
        expected[unscored] = frame.loc[unscored, "category"].map(rate).fillna(overall)
        shape = min(shape, base["y"].sum() + PRIOR_PURCHASES)
    return expected, calibration, shape


def estimate_offer_lifts(frame: pd.DataFrame, offer_table: pd.DataFrame, outcome: str) -> dict | None:
    """Pooled lifts per offer and per discount level (see the module docstring) from prepared exposure rows;
    None when no treated row has a baseline (see estimate_baselines)."""
    expected, calibration, spread = estimate_baselines(frame, outcome)
    known = frame["treated"] & expected.notna()
    if not known.any():
        return None
    treated = frame[known].assign(y=frame.loc[known, outcome].astype(float), expected=expected[known])
    discount = offer_table["discount"] if "discount" in offer_table.columns else pd.Series(0.0, offer_table.index)
    treated = treated.assign(discount=treated["offer"].map(discount).fillna(0.0).to_numpy(dtype="float64"))
    levels = {
        f"{d:g}": summarise_posterior(g["y"].sum(), g["expected"].sum(), 1.0, calibration_shape=spread)
        for d, g in treated.groupby("discount", sort=True)
    }
    offers = {
        str(o): summarise_posterior(
            g["y"].sum(),
            g["expected"].sum(),
            levels[f"{g['discount'].iloc[0]:g}"]["lift"],
            OFFER_PRIOR_PURCHASES,
            spread,
        )
        for o, g in treated.groupby("offer", sort=True)
    }
    return {
        "calibration": calibration,
        "levels": levels,
        "offers": offers,
        "rows": int(known.sum() + (~frame["treated"] & expected.notna()).sum()),
        "prior_purchases": PRIOR_PURCHASES,
        "offer_prior_purchases": OFFER_PRIOR_PURCHASES,
    }


def lift_table(lifts: dict, offer_ids: np.ndarray, discounts: np.ndarray, bound: str = "lift") -> np.ndarray:
    """Each offer's pooled lift (``bound``: "lift", "low" or "high"): its own estimate, else its discount level's,
    else 1 (no evidence: no effect)."""
    found = np.ones(len(offer_ids))
    for i, (offer, discount) in enumerate(zip(offer_ids, discounts)):
        own = lifts["offers"].get(str(offer)) or lifts["levels"].get(f"{discount:g}")
        if own is not None:
            found[i] = own[bound]
    return found
