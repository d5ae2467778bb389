"""The targeting guard: a campaign targets by the uplift model only when, held out, its policy beats the best
single offer and random targeting with 95 % confidence; otherwise it sends the best single offer to a random
budget share of the eligible customers, and says why.

The decision is taken once, when the model is trained, and stored in the model's report; ``nbo campaign`` applies
it. Its evidence (``measure_evidence``): doubly robust gains with customer-bootstrap intervals on every logged row
that no model saw: the held-out rows predicted by the model fitted on the training rows, and the training rows
cross-fitted by customer folds (each predicted by the same learner fitted on the other folds). Four times the rows
of a 25 % holdout halve the intervals' width.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from training.uplift.evaluate import BASELINES, build_offer_grid, evaluate_predictions, predict_arms
from training.uplift.learners import assign_folds, can_cross_fit, cross_fit
from training.uplift.model import UpliftModel, live_offers, offer_values, select_campaign

ESTIMATORS = ("dr", "snips")  # the first one the report holds judges the gains
SEED = 0  # the random share of customers that gets the best single offer
REPORT_FILE = "report.json"  # the published model's training report, with the guard's decision


def measure_evidence(
    learner: str,
    model: UpliftModel,
    people: pd.DataFrame,
    train: pd.DataFrame,
    test: pd.DataFrame,
    offer_table: pd.DataFrame,
    budget: float,
    history: pd.DataFrame,
    n_boot: int,
    seed: int,
) -> tuple[dict[str, dict], int]:
    """The guard's metrics (evaluate_uplift's) on the held-out rows and the cross-fitted training rows (only the
    held-out rows when the training rows are too few to cross-fit), and how many rows they cover."""
    if not can_cross_fit(train, assign_folds(train, seed)):
        train = train.iloc[:0]
    rows = pd.concat([train, test], ignore_index=True)
    offers, available = build_offer_grid(rows)
    held = np.arange(len(rows)) >= len(train)
    with_offer, without = np.full(available.shape, np.nan), np.full(available.shape, np.nan)
    with_offer[held], without[held] = predict_arms(model, people, offer_table, test, offers, available[held])
    if len(train):
        with_offer[~held], without[~held] = cross_fit(
            (learner,), people, train, offer_table, model.spec.outcome, offers, available[~held], seed
        )[learner]
    return evaluate_predictions(
        rows, offers, available, with_offer, without, model.spec, offer_table, budget, None, history, n_boot, seed
    ), len(rows)


def estimate_offer_effects(frame: pd.DataFrame, outcome: str) -> dict[str, float]:
    """Per offer, the self-normalised IPS mean outcome of its rows minus that of the control rows (those meant
    for the offer when control rows carry one): what sending it to everyone adds per customer."""
    y, weight = frame[outcome].astype(float), 1.0 / frame["propensity"].astype(float)
    control = ~frame["treated"]
    by_offer = bool(frame.loc[control, "offer"].notna().all())
    effects = {}
    for offer in sorted(frame.loc[frame["treated"], "offer"].astype(str).unique()):
        mine = frame["treated"] & (frame["offer"].astype(str) == offer)
        base = control & (frame["offer"].astype(str) == offer) if by_offer else control
        if base.any():
            effects[offer] = float(
                np.average(y[mine], weights=weight[mine]) - np.average(y[base], weights=weight[base])
            )
    return effects


def decide_targeting(metrics: dict[str, dict], effects: dict[str, float], budget: float, outcome: str) -> dict:
    """Whether campaigns target by the model, the best single offer and the reason, from a held-out report."""
    best = max(effects, key=lambda offer: effects[offer]) if effects else None
    decision = {"by_model": False, "best_single_offer": best, "offer_effects": effects, "budget": budget}
    estimator = next((e for e in ESTIMATORS if f"model_gain_over_{BASELINES[0]}_{e}" in metrics), None)
    if estimator is None:
        return decision | {
            "reason": "no held-out evaluation (--holdout 0 or an old report): the model's targeting is unproven"
        }
    gains = {baseline: metrics[f"model_gain_over_{baseline}_{estimator}"] for baseline in BASELINES}
    said = "; ".join(
        f"over {b.replace('_', ' ')} {g['value']:+.4f} [{g['low']:+.4f}, {g['high']:+.4f}]" for b, g in gains.items()
    )
    confident = all(np.isfinite(g["low"]) and g["low"] > 0 for g in gains.values())
    verdict = (
        "beats the best single offer and random targeting with 95 % confidence"
        if confident
        else "does not beat the best single offer and random targeting with 95 % confidence"
    )
    return decision | {
        "by_model": bool(confident),
        "estimator": estimator,
        "gains": gains,
        "reason": f"on rows no model saw, at a {budget:.0%} budget, targeting by the model {verdict} "
        f"(incremental {outcome} per customer, {estimator.upper()}, 95 % interval: {said})",
    }


def send_best_single_offer(
    best: pd.DataFrame, targeting: dict, worth: pd.Series, budget: float, eligible: int
) -> tuple[pd.DataFrame, str]:
    """The campaign without the model: the live offer with the largest estimated effect x value, to a random budget
    share of the eligible customers (``best``: their rows from score_best_offers; ``worth``: each live offer's value
    of one incremental outcome, by offer_id), and what was sent."""
    worth = worth[~worth.index.duplicated()]
    value = {str(o): float(v) for o, v in worth.items()}
    effects = {o: e for o, e in targeting.get("offer_effects", {}).items() if o in value}
    if not effects:
        return best.iloc[:0], "no live offer has an estimated effect: nobody is contacted"
    offer = max(effects, key=lambda o: effects[o] * value[o])
    if effects[offer] * value[offer] <= 0:
        return best.iloc[:0], f"the best live offer '{offer}' has no positive estimated effect: nobody is contacted"
    chosen = best.iloc[np.random.default_rng(SEED).permutation(len(best))[: int(np.floor(budget * eligible))]]
    chosen = chosen.assign(
        offer_id=offer, uplift=effects[offer], value=value[offer], expected_value=effects[offer] * value[offer]
    )[list(best.columns)].reset_index(drop=True)
    return chosen, (
        f"sent the best single offer '{offer}' (estimated effect {effects[offer]:+.4f}, value "
        f"{value[offer]:g}) to a random share"
    )


def write_why(target: Path, targeting: dict, sent: str, rows: int) -> Path:
    """The guard's decision beside the campaign file: <campaign file>.why.json."""
    why = target.with_name(target.name + ".why.json")
    why.write_text(
        json.dumps(
            {
                "targeting": "model" if targeting["by_model"] else "best_single_offer",
                "reason": targeting["reason"],
                "sent": sent,
                "rows": rows,
                "best_single_offer": targeting.get("best_single_offer"),
                "gains": targeting.get("gains"),
                "offer_effects": targeting.get("offer_effects"),
            },
            indent=1,
        )
    )
    return why


def read_targeting(folder: Path) -> dict:
    """The guard's decision stored with the model published in ``folder``; an unproven model targets nobody."""
    report = json.loads((folder / REPORT_FILE).read_text()) if (folder / REPORT_FILE).exists() else {}
    if "targeting" in report:
        return report["targeting"]
    decision = decide_targeting({}, {}, float(report.get("params", {}).get("budget", 0.3)), "outcome")
    return decision | {
        "reason": f"the model in {folder} has no held-out targeting report: retrain it with "
        "`nbo uplift train`; nobody is targeted by an unproven model"
    }


def choose_campaign(
    folder: Path,
    model: UpliftModel,
    best: pd.DataFrame,
    offers: pd.DataFrame,
    channel: str,
    now: pd.Timestamp,
    budget: float,
    eligible: int,
) -> tuple[pd.DataFrame, str, dict]:
    """The campaign the guard allows (``best``: each eligible customer's best offer, from score_best_offers): the
    model's selection when it proved itself, else the best single offer; with what was sent and the decision."""
    targeting = read_targeting(folder)
    if targeting["by_model"]:
        return select_campaign(best, budget, eligible), "targeted by the model", targeting
    live = live_offers(offers, channel, now)
    worth = pd.Series(offer_values(model, live), index=live["offer_id"].astype(str))
    chosen, sent = send_best_single_offer(best, targeting, worth, budget, eligible)
    return chosen, sent, targeting
