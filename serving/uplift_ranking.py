"""Ranking by predicted incremental value: the registry's uplift champion, behind its gate, for the request path.

The uplift model (training.uplift.model, trained by `nbo retrain` from the decision log) predicts, per
(customer, offer), the chance of a purchase in the offer's category within the horizon with the offer (treated
booster) and without it (control booster). Its customer inputs are the customers table's attributes, so it says
how a kind of customer answers a kind of offer; the purchase-intent model says how likely this customer is to buy
in the category anyway. The expected incremental revenue of an offer combines them:

    basket x p x ((1 - discount) x lift - 1)

lift the offer's lift for this customer when the model's report holds lifts (training.uplift.lifts: a Poisson
regression of purchases with an offer over those expected without it, on the offer's discount and the customer's
attributes, times the offer's own factor), at its estimate (RANKING_BOUND; "low": the lower end of its 95 %
interval, which ranks an offer as adding revenue only when it surely does), else the boosters' treated / control
(clipped to [1/LIFT_CAP, LIFT_CAP]); p the purchase-intent probability of the offer's category,
basket the category's mean item price: the purchases the offer adds pay the discounted price, and the purchases
that would have happened anyway pay the discount too. An offer served to the customer in the same category within
the horizon is still in force: showing one there again adds only the days by which it extends the horizon, so
such offers count for the share of the horizon already gone (0 on the day that offer was served; for another offer
than the one in force, an approximation that takes the two as worth the same per day).

The gate: lifts rank once MIN_LIFT_EXPECTED purchases were expected behind them (judge_lifts); `nbo retrain`
registers new lifts as champion only when they explain held-out purchases at least as well as the published ones
(training.uplift.train.judge_lifts). Without
them, the uplift model ranks only if, held out (its report, doubly robust), the lower bound of its policy's
incremental purchases per customer (95 % interval) beats offering nothing (above 0) and popularity: popularity's
one offer (the best-value offer of the champion's most popular category) shown to everyone, whose effect the
report estimates from its logged rows and control rows; when the report has no estimate for that offer, the best
single offer for everyone (held out, at least as good as popularity's) stands in. Otherwise the purchase-intent
ranking serves and the reason says why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nbo.config import Paths
from serving.rules import Catalogue
from training.champions import UPLIFT, Installed, current_champion, installed
from training.uplift.campaign import encode_customers, encode_offers, split_offer_features
from training.uplift.lifts import LiftTable, report_lifts, standardise
from training.uplift.model import UpliftModel, load_uplift

REPORT_FILE = "report.json"
LIFT_CAP = 5.0
GATE_ESTIMATORS = ("dr", "ips")  # the first one the report holds judges (training.uplift.evaluate: doubly robust, IPS)
MIN_LIFT_EXPECTED = 100.0  # expected purchases without offers behind pooled lifts before they rank
RANKING_BOUND = "lift"  # lifts rank at their estimate (expected value); "low": at their 95 % interval's lower end


@dataclass(frozen=True)
class Verdict:
    """Whether the published uplift model may rank offers, and why (the figures it was judged on)."""

    ranks: bool
    reason: str
    value: float | None = None
    baseline: float | None = None

    def as_dict(self) -> dict:
        return {"ranks": self.ranks, "reason": self.reason, "value": self.value, "baseline": self.baseline}


def choose_popularity_offer(popularity: dict[str, float], offers: pd.DataFrame) -> str | None:
    """The offer popularity shows: the best-value offer of the most popular category (None without shares)."""
    known = offers[offers["category"].isin([c for c, share in popularity.items() if share > 0])]
    if known.empty:
        return None
    top = max(known["category"].unique(), key=lambda c: popularity[c])
    mine = known[known["category"] == top]
    return str(mine.sort_values(["value", "offer_id"], ascending=[False, True])["offer_id"].iloc[0])


def judge_lifts(lifts: dict) -> Verdict:
    """The gate on pooled lifts (training.uplift.lifts): they rank once the treated rows behind them expected
    MIN_LIFT_EXPECTED purchases (their calibration already rests on enough control rows)."""
    expected = sum(level["expected"] for level in lifts["levels"].values())
    purchases = sum(level["purchases"] for level in lifts["levels"].values())
    calibration = lifts["calibration"]
    baseline = (
        f"purchase intent x {calibration['lift']:.2f}, calibrated on the control group"
        if calibration
        else "the control group's purchase rate per category"
    )
    said = (
        f"pooled offer lifts from {lifts['rows']} logged rows: {purchases:.0f} purchases with an offer where "
        f"{expected:.0f} were expected without ({baseline})"
    )
    if expected < MIN_LIFT_EXPECTED:
        return Verdict(False, f"{said}: fewer than {MIN_LIFT_EXPECTED:.0f} expected", purchases, expected)
    return Verdict(True, said, purchases, expected)


def read_lifts(folder: Path) -> dict | None:
    """The lifts in the report of the uplift model in folder (None without, or in a form before the regression)."""
    report = folder / REPORT_FILE
    return report_lifts(json.loads(report.read_text())) if report.exists() else None


def judge_ranking(report: dict, popularity_offer: str | None = None) -> Verdict:
    """The gate on an uplift model's training report: its pooled lifts when it holds them (judge_lifts), else the
    lower bound of its held-out policy value's 95 % interval above 0 (no offer) and above popularity's (the
    estimated effect of popularity_offer for everyone; else the best single offer's): a point estimate swings
    from night to night with the weights of rare exploration slots."""
    lifts = report_lifts(report)
    if lifts is not None:
        return judge_lifts(lifts)
    metrics = report.get("metrics", {})
    estimator = next(
        (e for e in GATE_ESTIMATORS if f"model_{e}" in metrics and f"best_single_offer_{e}" in metrics), None
    )
    if estimator is None:
        return Verdict(False, "the uplift model's report holds no held-out policy values")
    value = float(metrics[f"model_{estimator}"]["value"])
    low = float(metrics[f"model_{estimator}"].get("low", np.nan))
    baseline = float(metrics[f"best_single_offer_{estimator}"]["value"])
    said = f"held out, the uplift model's offers add {value:.4f} purchases per customer (95 % interval from {low:.4f})"
    if not np.isfinite(low) or low <= 0:
        return Verdict(False, f"{said}: not surely better than no offer", value, baseline)
    effects = report.get("targeting", {}).get("offer_effects", {})
    if popularity_offer in effects:
        popular = float(effects[popularity_offer])
        if low > popular:
            return Verdict(
                True,
                f"{said}: more than popularity's offer {popularity_offer} for everyone ({popular:.4f})",
                value,
                popular,
            )
        return Verdict(
            False,
            f"{said}: not surely more than popularity's offer {popularity_offer} for everyone ({popular:.4f})",
            value,
            popular,
        )
    if not np.isfinite(baseline) or low < baseline:
        return Verdict(
            False,
            f"{said}: not surely better than the best single offer for everyone ({baseline:.4f}), which "
            "popularity's one offer cannot beat",
            value,
            baseline,
        )
    return Verdict(
        True,
        f"{said}: surely more than no offer and the best single offer for everyone ({baseline:.4f})",
        value,
        baseline,
    )


def find_published(home: Path, ask_registry: bool = True) -> Installed | None:
    """The registry's uplift champion, fetched and installed in the home (the one installed last while the
    registry does not answer, or without asking it); None when there is none."""
    return current_champion(Paths(home), UPLIFT) if ask_registry else installed(Paths(home), UPLIFT)


def published_version(home: Path) -> str | None:
    """The uplift champion's registered version (see find_published), None when there is none."""
    found = find_published(home)
    return found.version if found else None


def judge_published(folder: Path | None, popularity_offer: str | None) -> Verdict:
    """The gate on the uplift champion's folder (see find_published)."""
    if folder is None:
        return Verdict(False, "no uplift champion in the registry (`nbo retrain` trains one from the decision log)")
    return judge_ranking(json.loads((folder / REPORT_FILE).read_text()), popularity_offer)


class UpliftRanker:
    """A published uplift model encoded for the request path: every customer's inputs and every catalogue offer's
    inputs computed once, so that a request only stacks rows and runs the two boosters; with its report's lifts,
    each offer's lift for the customer instead (bound: "lift", the estimate, or "low", its 95 % interval's lower
    end)."""

    def __init__(
        self,
        model: UpliftModel,
        version: str,
        customers: pd.DataFrame,
        catalogue: Catalogue,
        offers: pd.DataFrame,
        items: pd.DataFrame,
        now: pd.Timestamp,
        lifts: dict | None = None,
        bound: str = RANKING_BOUND,
    ):
        spec = self.spec = model.spec
        self.model, self.version = model, version
        customer_at, offer_at = split_offer_features(spec)
        self.customer_at, self.offer_at = np.array(customer_at, dtype=np.int64), np.array(offer_at, dtype=np.int64)
        people = customers.drop_duplicates("customer_id")
        self.customers = encode_customers(spec, people, now)
        self.row_of = {c: i for i, c in enumerate(people["customer_id"].astype(str))}
        table = offers.drop_duplicates("offer_id").set_index("offer_id")
        ids = catalogue.offer_ids
        self.offers = encode_offers(spec, people, table.reindex(ids).rename_axis("offer_id").reset_index(), now)
        discount = (
            table["discount"].reindex(ids).to_numpy(dtype="float64") if "discount" in table else np.zeros(len(ids))
        )
        self.paid = 1.0 - np.nan_to_num(discount, nan=0.0)
        self.bound = bound
        self.lifts = (
            LiftTable(lifts, ids, np.nan_to_num(discount, nan=0.0), standardise(lifts, people, people["customer_id"]))
            if lifts
            else None
        )
        basket = items.groupby("category")["price"].mean() if "price" in items else pd.Series(dtype=float)
        self.basket = basket.reindex(catalogue.category_names).fillna(1.0).to_numpy(dtype="float64")

    def lift(self, customer_id: str, candidates: np.ndarray) -> np.ndarray:
        """Each candidate offer's (catalogue positions) lift for the customer when the report holds lifts (see
        training.uplift.lifts), else the treated over the control booster's predicted purchase chance."""
        row = self.row_of.get(customer_id)
        if self.lifts is not None:
            return self.lifts.lift(row, candidates, self.bound)
        n = len(candidates)
        pairs = np.full((n, len(self.spec.features)), np.nan)
        if row is not None:
            pairs[:, self.customer_at] = self.customers[row]
        pairs[:, self.offer_at] = self.offers[candidates]
        treated = self.model.treated.predict(pairs, num_threads=1)
        if not self.spec.control_by_offer:
            pairs[:, self.offer_at] = np.nan
        control = self.model.control.predict(pairs[:1] if not self.spec.control_by_offer else pairs, num_threads=1)
        return np.clip(treated / np.maximum(control, 1e-6), 1 / LIFT_CAP, LIFT_CAP)

    def incremental_value(
        self, customer_id: str, candidates: np.ndarray, codes: np.ndarray, probability: np.ndarray, left: np.ndarray
    ) -> np.ndarray:
        """Expected incremental revenue of each candidate offer given the purchase-intent probability of its
        category, for the part of the horizon it adds where an offer is in force in the category (left: per
        category code, the share of the horizon the offer there is still in force for; see the module's formula)."""
        lift = self.lift(customer_id, candidates)
        value = self.basket[codes] * probability * (self.paid[candidates] * lift - 1.0)
        return value * (1.0 - left[codes])


def load_ranker(
    found: Installed | None,
    customers: pd.DataFrame,
    catalogue: Catalogue,
    offers: pd.DataFrame,
    items: pd.DataFrame,
    now: pd.Timestamp,
    popularity: dict[str, float],
) -> tuple[UpliftRanker | None, Verdict, str | None]:
    """The uplift champion found (find_published) ready to rank when its gate lets it (else None), the verdict, and
    the version judged; popularity: the purchase-intent champion's category shares."""
    verdict = judge_published(found.folder if found else None, choose_popularity_offer(popularity, offers))
    if not verdict.ranks or found is None:
        return None, verdict, found.version if found else None
    ranker = UpliftRanker(
        load_uplift(found.folder), found.version, customers, catalogue, offers, items, now, read_lifts(found.folder)
    )
    return ranker, verdict, found.version
