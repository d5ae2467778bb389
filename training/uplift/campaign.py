"""Campaign scoring at scale: each eligible customer's best offer by expected incremental value.

Every (customer, offer) pair is scored from small per-tree tables (training.pair_tables: in each tree, a pair's
leaf is the one both its customer's and its offer's splits allow), which needs no profile of shared inputs and
stays fast when attributes are continuous. Group sums of those tables differ from LightGBM's predictions by
rounding only, within a known bound; per customer, the offers whose expected value may be the best within that
bound are then scored exactly (tree values added in LightGBM's order, bit for bit), and the best of them is kept.
The selection is the one of scoring every (customer, offer) pair with ``build_candidates`` and
``select_campaign``, bit for bit. Chunks of customers are scored on every core.

Optionally the few pairs scored exactly are scored by boosters compiled to machine code with lleaves (``pip
install 'nbo[compiled]'``): equal to LightGBM's to about 1e-15 (not bit for bit), after a few seconds of compiling
that are cached beside the model; no faster since the tables.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from serving.rules import ControlGroup, control_mask
from training.pair_tables import PairTables, find_all_paths, sum_exactly, sum_groups, tabulate_pairs
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

CHUNK_PAIRS = 400_000  # (customer, offer) rows the boosters score at once: about 40 MB of inputs per chunk
CHUNK_CUSTOMERS = 50_000  # customers scored from the tables at once: about 20 MB of scores per booster, 50 offers
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


def predict_pairs(
    spec: UpliftSpec,
    predict: Predict,
    person: np.ndarray,
    offer: np.ndarray | None,
    rows: np.ndarray,
    offers: np.ndarray,
) -> np.ndarray:
    """A booster's prediction for the pairs (person[rows], offer[offers]), in chunks of CHUNK_PAIRS; offer None:
    offer inputs missing."""
    customer_at, offer_at = split_offer_features(spec)
    out = np.empty(len(rows))
    for first in range(0, len(rows), CHUNK_PAIRS):
        chunk = slice(first, first + CHUNK_PAIRS)
        pairs = np.full((len(rows[chunk]), len(spec.features)), np.nan)
        pairs[:, customer_at] = person[rows[chunk]]
        if offer is not None:
            pairs[:, offer_at] = offer[offers[chunk]]
        out[chunk] = predict(pairs)
    return out


def score_contenders(
    treated: PairTables, control: PairTables, chunk: np.ndarray, worth: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (customer row, offer) pairs of a chunk of customers that may hold a customer's best expected value
    (within twice the tables' bound of its best group sum; a missing expected value counts as the lowest), and
    their exact uplift."""
    treated_paths, control_paths = find_all_paths(treated, chunk), find_all_paths(control, chunk)
    uplift = sum_groups(treated, treated_paths) - sum_groups(control, control_paths)
    expected = np.nan_to_num(uplift * worth, nan=-np.inf)
    slack = 2 * (treated.bound + control.bound) * np.nan_to_num(np.abs(worth))
    rows, offers = np.nonzero(expected + slack >= (expected - slack).max(axis=1, keepdims=True))
    control_offers = offers if control.values[0].shape[1] > 1 else np.zeros_like(offers)
    exact = sum_exactly(treated, treated_paths, rows, offers) - sum_exactly(
        control, control_paths, rows, control_offers
    )
    return rows, offers, exact


def find_contenders(
    model: UpliftModel,
    person: np.ndarray,
    offer: np.ndarray,
    worth: np.ndarray,
    progress: Callable[[int, int], None],
    threads: int = THREADS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """score_contenders of every customer, in chunks of CHUNK_CUSTOMERS on `threads` threads; progress gets (pairs
    scored, pairs to score)."""
    customer_at, offer_at = split_offer_features(model.spec)
    treated = tabulate_pairs(model.treated, customer_at, offer_at, offer)
    control = tabulate_pairs(model.control, customer_at, offer_at, offer if model.spec.control_by_offer else None)
    starts = range(0, len(person), CHUNK_CUSTOMERS)
    found = []
    with ThreadPoolExecutor(threads) as pool:
        chunks = pool.map(
            lambda first: score_contenders(treated, control, person[first : first + CHUNK_CUSTOMERS], worth), starts
        )
        for first, (rows, offers, exact) in zip(starts, chunks):
            found.append((rows + first, offers, exact))
            progress(min(first + CHUNK_CUSTOMERS, len(person)) * len(worth), len(person) * len(worth))
    return tuple(np.concatenate(part) for part in zip(*found))  # type: ignore[return-value]


def score_best_offers(
    model: UpliftModel,
    customers: pd.DataFrame,
    offers: pd.DataFrame,
    channel: str,
    now: pd.Timestamp,
    segment: dict[str, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    predictors: tuple[Predict, Predict] | None = None,
    threads: int = THREADS,
) -> tuple[pd.DataFrame, int]:
    """Each eligible customer's best live offer (columns BEST_COLUMNS, customers in table order) and the number
    of eligible customers; eligibility as in ``build_candidates``. progress gets (pairs scored, pairs to score);
    predictors: the treated and control predictions of the contending pairs (default: LightGBM's, from the
    tables; compile_predictors: lleaves'); threads: the threads scoring chunks of customers (default: one a core)."""
    people, live = eligible_customers(customers, channel, segment), live_offers(offers, channel, now)
    for table, key in ((people, "customer_id"), (live, "offer_id")):
        if table[key].duplicated().any():
            raise ValueError(f"column '{key}' repeats: {table.loc[table[key].duplicated(), key].iloc[0]}")
    if people.empty or live.empty:
        return pd.DataFrame({name: [] for name in BEST_COLUMNS}), len(people) if len(live) else 0
    spec, worth = model.spec, offer_values(model, live)
    person, offer = encode_customers(spec, people, now), encode_offers(spec, people, live, now)
    report = progress or (lambda done, total: None)
    rows, columns, uplift = find_contenders(model, person, offer, worth, report, threads)
    if predictors:
        uplift = predict_pairs(spec, predictors[0], person, offer, rows, columns) - predict_pairs(
            spec, predictors[1], person, offer if spec.control_by_offer else None, rows, columns
        )
    expected = uplift * worth[columns]
    order = np.lexsort((columns, -expected, rows))  # per customer: the best, the first offer on ties
    best = order[np.r_[True, rows[order][1:] != rows[order][:-1]]]
    chosen = columns[best]
    return pd.DataFrame(
        {
            "customer_id": people["customer_id"].to_numpy(),
            "offer_id": live["offer_id"].to_numpy()[chosen],
            "uplift": uplift[best],
            "value": worth[chosen],
            "expected_value": expected[best],
        }
    ), len(people)


def leave_out_control(best: pd.DataFrame, eligible: int, control: ControlGroup) -> tuple[pd.DataFrame, int, int]:
    """The best offers of the eligible customers outside the global control group (no campaign reaches it, what
    its baseline policy may be), the eligible customers left and how many the control group held out."""
    held = control_mask(best["customer_id"], control)
    return best[~held], eligible - int(held.sum()), int(held.sum())
