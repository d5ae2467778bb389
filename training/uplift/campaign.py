"""Campaign scoring at scale: each eligible customer's best offer by expected incremental value.

Two customers whose inputs fall on the same side of every split threshold of a booster (same category codes,
same missing and zero flags) follow the same path in each of its trees, so the booster predicts the same for
them. Each booster (treated, control) therefore scores one representative customer per such profile of its own
against every live offer, in chunks; each customer's uplift per offer is then its treated profile's prediction
minus its control profile's, and only its best offer is kept. The selection is the one of scoring every
(customer, offer) pair with ``build_candidates`` and ``select_campaign``, bit for bit.

Optionally the boosters are compiled to machine code with lleaves (``pip install 'nbo[compiled]'``): about five
times faster predictions, equal to LightGBM's to about 1e-15 (not bit for bit), after a few seconds of compiling
that are cached beside the model.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from serving.rules import ControlGroup, control_mask
from training.tree_paths import collect_splits, group_profiles, tabulate_splits
from training.uplift.model import (
    CONTROL_FILE,
    TREATED_FILE,
    UpliftModel,
    UpliftSpec,
    build_matrix,
    eligible_customers,
    live_offers,
    offer_values,
)

CHUNK_PAIRS = 400_000  # (profile, offer) rows scored at once: about 40 MB of inputs per chunk
THREADS = os.cpu_count() or 1  # campaign scoring uses every core
BEST_COLUMNS = ["customer_id", "offer_id", "uplift", "value", "expected_value"]
Predict = Callable[[np.ndarray], np.ndarray]


def booster_predictors(model: UpliftModel) -> tuple[Predict, Predict]:
    """LightGBM's predict of the treated and of the control booster, on every core."""
    return (
        lambda inputs: np.asarray(model.treated.predict(inputs, num_threads=THREADS)),
        lambda inputs: np.asarray(model.control.predict(inputs, num_threads=THREADS)),
    )


def compile_predictors(folder: Path) -> tuple[Predict, Predict]:
    """The treated and control boosters saved in folder, compiled by lleaves; each object file is cached in
    folder under the hash of its model text."""
    try:
        import lleaves
    except ImportError as error:
        raise ValueError("compiled scoring needs lleaves: pip install 'nbo[compiled]'") from error
    compiled = []
    for name in (TREATED_FILE, CONTROL_FILE):
        source = folder / name
        booster = lleaves.Model(model_file=str(source))
        booster.compile(cache=str(folder / f"{source.stem}-{hashlib.sha256(source.read_bytes()).hexdigest()[:16]}.o"))
        compiled.append(lambda inputs, booster=booster: booster.predict(inputs, n_jobs=THREADS))
    return compiled[0], compiled[1]


def split_offer_features(spec: UpliftSpec) -> tuple[list[int], list[int]]:
    """Positions of the customer inputs and of the offer inputs in ``spec.features``."""
    offer_names = {"offer_id", "offer_category", *spec.offer_numeric}
    positions = list(enumerate(spec.features))
    return (
        [i for i, name in positions if name not in offer_names],
        [i for i, name in positions if name in offer_names],
    )


def encode_customers(spec: UpliftSpec, people: pd.DataFrame, now: pd.Timestamp) -> np.ndarray:
    """Customer inputs, one row per customer: ``build_matrix``'s customer columns at time ``now``."""
    rows = build_matrix(
        spec,
        people,
        pd.DataFrame(columns=["category"]),
        people["customer_id"],
        None,
        pd.Series(now).repeat(len(people)),
    )
    return rows[:, split_offer_features(spec)[0]]


def encode_offers(spec: UpliftSpec, people: pd.DataFrame, live: pd.DataFrame, now: pd.Timestamp) -> np.ndarray:
    """Offer inputs, one row per live offer: ``build_matrix``'s offer columns (offer_id and category codes, offer
    numbers)."""
    table = live.drop_duplicates("offer_id").set_index("offer_id")
    needed = [*spec.offer_numeric, *(["category"] if "offer_category" in spec.categories else [])]
    if missing := [c for c in needed if c not in table.columns]:
        raise ValueError(f"offers lack column(s) {missing} the uplift model was trained with")
    rows = build_matrix(
        spec,
        people.iloc[:1],
        table,
        np.repeat(people["customer_id"].iloc[0], len(live)),
        live["offer_id"],
        pd.Series(now).repeat(len(live)),
    )
    return rows[:, split_offer_features(spec)[1]]


def find_profiles(booster: lgb.Booster, spec: UpliftSpec, person: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """group_profiles of encoded customers under the booster's split thresholds."""
    splits = collect_splits([booster])
    return group_profiles(person, tabulate_splits([splits.get(i, False) for i in split_offer_features(spec)[0]]))


def predict_pairs(
    spec: UpliftSpec,
    predict: Predict,
    person: np.ndarray,
    offer: np.ndarray | None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """A booster's prediction for every (person row, offer) pair, shape (rows, offers), in chunks of about
    CHUNK_PAIRS pairs; offer None: offer inputs missing, one column. progress gets the pairs done so far."""
    customer_at, offer_at = split_offer_features(spec)
    n_offers = 1 if offer is None else len(offer)
    out = np.empty((len(person), n_offers))
    step = max(1, CHUNK_PAIRS // n_offers)
    for first in range(0, len(person), step):
        rows = person[first : first + step]
        pairs = np.full((len(rows) * n_offers, len(spec.features)), np.nan)
        pairs[:, customer_at] = np.repeat(rows, n_offers, axis=0)
        if offer is not None:
            pairs[:, offer_at] = np.tile(offer, (len(rows), 1))
        out[first : first + step] = predict(pairs).reshape(len(rows), n_offers)
        if progress:
            progress(min(first + step, len(person)) * n_offers)
    return out


def pick_best_offers(
    treated: np.ndarray, control: np.ndarray, treated_rows: np.ndarray, control_rows: np.ndarray, worth: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Uplift = treated[treated_rows] - control[control_rows] (control with one column: the same for every
    offer); per row, the offer with the highest expected value, uplift x worth (the first on ties), and its
    uplift; in chunks of about CHUNK_PAIRS."""
    best = np.zeros(len(treated_rows), dtype=np.int64)
    uplift = np.zeros(len(treated_rows))
    step = max(1, CHUNK_PAIRS // len(worth))
    for first in range(0, len(treated_rows), step):
        scored = treated[treated_rows[first : first + step]] - control[control_rows[first : first + step]]
        chosen = np.argmax(scored * worth, axis=1)
        best[first : first + step] = chosen
        uplift[first : first + step] = scored[np.arange(len(chosen)), chosen]
    return best, uplift


def score_best_offers(
    model: UpliftModel,
    customers: pd.DataFrame,
    offers: pd.DataFrame,
    channel: str,
    now: pd.Timestamp,
    segment: dict[str, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    predictors: tuple[Predict, Predict] | None = None,
) -> tuple[pd.DataFrame, int]:
    """Each eligible customer's best live offer (columns BEST_COLUMNS, customers in table order) and the number
    of eligible customers; eligibility as in ``build_candidates``. progress gets (pairs scored, pairs to score);
    predictors: the treated and control predictions (default: LightGBM's, see booster_predictors)."""
    people, live = eligible_customers(customers, channel, segment), live_offers(offers, channel, now)
    for table, key in ((people, "customer_id"), (live, "offer_id")):
        if table[key].duplicated().any():
            raise ValueError(f"column '{key}' repeats: {table.loc[table[key].duplicated(), key].iloc[0]}")
    if people.empty or live.empty:
        return pd.DataFrame({name: [] for name in BEST_COLUMNS}), len(people) if len(live) else 0
    spec, worth = model.spec, offer_values(model, live)
    person, offer = encode_customers(spec, people, now), encode_offers(spec, people, live, now)
    first_t, treated_of = find_profiles(model.treated, spec, person)
    first_c, control_of = find_profiles(model.control, spec, person)
    control_offer = offer if spec.control_by_offer else None
    n_treated = len(first_t) * len(live)
    total = n_treated + len(first_c) * (1 if control_offer is None else len(live))
    report = progress or (lambda done, total: None)
    treated_predict, control_predict = predictors or booster_predictors(model)
    treated = predict_pairs(spec, treated_predict, person[first_t], offer, lambda done: report(done, total))
    control = predict_pairs(
        spec, control_predict, person[first_c], control_offer, lambda done: report(n_treated + done, total)
    )
    joint = treated_of * len(first_c) + control_of
    _, first, profile = np.unique(joint, return_index=True, return_inverse=True)
    best, uplift = pick_best_offers(treated, control, treated_of[first], control_of[first], worth)
    chosen = best[profile]
    return pd.DataFrame(
        {
            "customer_id": people["customer_id"].to_numpy(),
            "offer_id": live["offer_id"].to_numpy()[chosen],
            "uplift": uplift[profile],
            "value": worth[chosen],
            "expected_value": uplift[profile] * worth[chosen],
        }
    ), len(people)


def leave_out_control(best: pd.DataFrame, eligible: int, control: ControlGroup) -> tuple[pd.DataFrame, int, int]:
    """The best offers of the eligible customers outside the global control group (no campaign reaches it, what
    its baseline policy may be), the eligible customers left and how many the control group held out."""
    held = control_mask(best["customer_id"], control)
    return best[~held], eligible - int(held.sum()), int(held.sum())
