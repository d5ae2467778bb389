"""Uplift learners that hold up when effects are small and noisy, and their choice by cross-validated policy value.

Every learner returns an ``UpliftModel``: a treated and a control booster that each predict the outcome (a
probability for a binary outcome), so ``predict_uplift``, campaign scoring and the request path use any of them.

- ``t``: a regularised T-learner: one booster per arm, shallow trees, each stopped honestly: the number of rounds
  is the one that minimised the loss on a validation share of that arm's customers, then the booster is refitted
  on all of the arm's rows with that many rounds.
- ``shared``: a prognostic booster fitted on both arms (no treatment input), then continued on each arm's rows
  with a few early-stopped trees of its own. Both arms share the baseline's trees, so its noise cancels in the
  difference, and the uplift stays 0 where the arms' continuations learn nothing; a constant effect on the logit
  scale still gives more uplift to customers with a higher baseline.

``choose_learner`` fits each candidate on all but one customer fold and predicts the fold, then values each
candidate's policy at the budget with doubly robust scores (cross-fitted: the outcome models of the fold's own
predictions never saw its rows) and keeps the best.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd

from training.uplift.evaluate import (
    arm_residual,
    build_offer_grid,
    build_policies,
    estimate_intended_share,
    pick_row_offer,
    predict_arms,
    value_policy,
)
from training.uplift.model import UpliftModel, UpliftSpec, build_matrix, build_spec

LEARNERS = ("t", "shared")
PARAMS: dict[str, object] = {
    "learning_rate": 0.05,
    "num_leaves": 7,
    "min_data_in_leaf": 100,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "feature_fraction": 0.8,
    "lambda_l2": 10.0,
    "max_bin": 63,
    "verbose": -1,
    "num_threads": 2,
    "seed": 0,
}
MAX_ROUNDS, PATIENCE, VALID_SHARE, FOLDS = 400, 30, 0.25, 3


def pick_customers(customer_ids: pd.Series, share: float, seed: int) -> np.ndarray:
    """A boolean mask of the rows of a random share of customers (a customer's rows stay together)."""
    codes, uniques = pd.factorize(customer_ids)
    return (np.random.default_rng(seed).random(len(uniques)) < share)[codes]


def boost_honestly(
    params: dict,
    matrix: np.ndarray,
    y: np.ndarray,
    categorical: list[int],
    valid: np.ndarray,
    init: lgb.Booster | None = None,
    refit: bool = True,
) -> lgb.Booster:
    """A booster (continuing ``init`` when given) with as many rounds as minimised the validation loss of a booster
    fitted without the ``valid`` rows, refitted on every row (without ``refit``: that booster itself, cut at its
    best round; half the work, for cross-validation)."""

    def data(rows: np.ndarray) -> lgb.Dataset:
        return lgb.Dataset(
            matrix[rows],
            y[rows],
            categorical_feature=categorical,
            free_raw_data=False,
            params={"max_bin": params["max_bin"], "verbose": -1},
        )

    rounds = MAX_ROUNDS
    if valid.any() and (~valid).any():
        stopper = lgb.early_stopping(PATIENCE, verbose=False)
        trial = lgb.train(
            params, data(~valid), MAX_ROUNDS, valid_sets=[data(valid)], init_model=init, callbacks=[stopper]
        )  # returned cut at its best round (init's trees included)
        if not refit:
            return trial
        rounds = max(1, trial.best_iteration - (init.num_trees() if init is not None else 0))
    return lgb.train(params, data(np.ones(len(y), dtype=bool)), rounds, init_model=init)


def arm_inputs(
    spec: UpliftSpec, customers: pd.DataFrame, offer_table: pd.DataFrame, frame: pd.DataFrame, treated: bool
) -> tuple[np.ndarray, np.ndarray, pd.Series]:
    """Model inputs, outcomes and customer ids of one arm's rows."""
    rows = frame[frame["treated"] == treated]
    offers = rows["offer"] if treated or spec.control_by_offer else None
    matrix = build_matrix(spec, customers, offer_table, rows["customer_id"], offers, rows["ts"])
    return matrix, rows[spec.outcome].astype(float).to_numpy(), rows["customer_id"].reset_index(drop=True)


def fit_learner(
    name: str,
    customers: pd.DataFrame,
    frame: pd.DataFrame,
    offer_table: pd.DataFrame,
    outcome: str,
    seed: int = 0,
    refit: bool = True,
) -> UpliftModel:
    """Fit learner ``name`` (one of LEARNERS) on prepared exposure rows (``refit``: see boost_honestly)."""
    if name not in LEARNERS:
        raise ValueError(f"learner must be one of {LEARNERS}, got {name!r}")
    spec = build_spec(customers, offer_table, frame, outcome)
    params = {**PARAMS, "objective": "binary" if spec.binary else "regression", "seed": seed}
    categorical = [i for i, column in enumerate(spec.features) if column in spec.categories]
    arms = [arm_inputs(spec, customers, offer_table, frame, arm) for arm in (True, False)]
    valids = [pick_customers(ids, VALID_SHARE, seed + i) for i, (_, _, ids) in enumerate(arms)]
    if name == "t":
        treated, control = (
            boost_honestly(params, m, y, categorical, v, refit=refit) for (m, y, _), v in zip(arms, valids)
        )
        return UpliftModel(treated, control, spec)
    pooled = np.vstack([arms[0][0], arms[1][0]])
    offer_at = [
        i for i, column in enumerate(spec.features) if column.startswith("offer_") or column in spec.offer_numeric
    ]
    pooled[:, offer_at] = np.nan  # the baseline has no offer inputs: only the arms' own trees see them
    base = boost_honestly(
        params, pooled, np.concatenate([arms[0][1], arms[1][1]]), categorical, np.concatenate(valids), refit=refit
    )
    arm_params = {**params, "learning_rate": 0.03}
    treated, control = (
        boost_honestly(arm_params, m, y, categorical, v, init=base, refit=refit) for (m, y, _), v in zip(arms, valids)
    )
    return UpliftModel(treated, control, spec)


def assign_folds(frame: pd.DataFrame, seed: int) -> np.ndarray:
    """Each row's customer fold, 0 to FOLDS - 1."""
    codes, uniques = pd.factorize(frame["customer_id"])
    return np.random.default_rng(seed).integers(0, FOLDS, len(uniques))[codes]


def can_cross_fit(frame: pd.DataFrame, fold: np.ndarray) -> bool:
    """Whether every fold holds rows and the rows outside it hold both arms."""
    treated = frame["treated"].to_numpy()
    return all((fold == k).any() and treated[fold != k].any() and (~treated[fold != k]).any() for k in range(FOLDS))


def cross_fit(
    learners: tuple[str, ...],
    customers: pd.DataFrame,
    frame: pd.DataFrame,
    offer_table: pd.DataFrame,
    outcome: str,
    offers: pd.Index,
    available: np.ndarray,
    seed: int,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per learner, rows x offers outcome predictions with and without the offer, each row predicted by the
    learner fitted on the other customer folds."""
    fold = assign_folds(frame, seed)
    if not can_cross_fit(frame, fold):
        raise ValueError("too few customers to cross-validate the uplift learners (each fold needs both arms)")
    grids = {name: (np.full(available.shape, np.nan), np.full(available.shape, np.nan)) for name in learners}
    for k in range(FOLDS):
        inside = fold == k
        fitting, held = frame[~inside].reset_index(drop=True), frame[inside].reset_index(drop=True)
        for name in learners:
            model = fit_learner(name, customers, fitting, offer_table, outcome, seed, refit=False)
            with_offer, without = predict_arms(model, customers, offer_table, held, offers, available[inside])
            grids[name][0][inside], grids[name][1][inside] = with_offer, without
    return grids


def choose_learner(
    customers: pd.DataFrame,
    frame: pd.DataFrame,
    offer_table: pd.DataFrame,
    outcome: str,
    budget: float,
    seed: int = 0,
    learners: tuple[str, ...] = LEARNERS,
) -> tuple[str, dict[str, float]]:
    """The learner whose cross-fitted policy (each row's best offer, the top ``budget`` of each campaign) has the
    highest doubly robust value, and every learner's value (the first learner and no values when there is one, or
    too few customers to cross-fit). The scores' outcome model is the learners' mean
    cross-fitted prediction, so no row's score uses a model that saw it."""
    if len(learners) == 1 or not can_cross_fit(frame, assign_folds(frame, seed)):
        return learners[0], {}
    offers, available = build_offer_grid(frame)
    grids = cross_fit(learners, customers, frame, offer_table, outcome, offers, available, seed)
    with_offer = np.mean([g[0] for g in grids.values()], axis=0)
    without = np.mean([g[1] for g in grids.values()], axis=0)
    y = frame[outcome].astype(float).to_numpy()
    treated = frame["treated"].to_numpy()
    column = offers.get_indexer(frame["offer"].astype(object).where(frame["offer"].notna(), None))
    control_by_offer = bool(frame.loc[~frame["treated"], "offer"].notna().all())
    groups = offer_table["category"] if "category" in offer_table.columns else pd.Series(dtype=object)
    share = (
        pick_row_offer(estimate_intended_share(frame, offers, available, groups, frame), column)
        if control_by_offer
        else None
    )
    residual = arm_residual(y, treated, column, with_offer, without)
    values = {}
    for name, (mine_with, mine_without) in grids.items():
        policy = build_policies(mine_with - mine_without, frame["campaign"], budget)["model"]
        values[name] = value_policy(
            policy,
            column,
            treated,
            frame["propensity"].to_numpy(),
            share,
            y,
            np.ones(len(frame)),
            None,
            with_offer - without,
            residual,
        )["dr"]
    return max(values, key=lambda name: values[name]), values
