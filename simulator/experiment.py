"""A randomised e-mail experiment with its ground truth: ``nbo generate --setting experiment``.

It mirrors public retail e-mail tests: one send date, a third of the customers get e-mail version A
(``mens_email``), a third version B (``womens_email``), a third no e-mail (``control``); outcomes over the next
two weeks are ``visit`` (about 10.6 % without e-mail, 18.3 % and 15.1 % with), ``conversion`` (about 0.6 %,
1.3 %, 0.9 %) and ``spend``. Attributes: months since the last purchase (``recency``), spend over the past year
(``history``), which product lines were bought (``mens``, ``womens``), new customer or not (``newbie``),
``acquisition_channel`` and ``area``. How often a customer visits anyway depends on the attributes and on a latent
part none explains. The effect of each version on the logit varies modestly: more among buyers of its product line
and recent customers, less among new ones, plus a customer-level part no attribute explains.

Files (the exact tables ``nbo uplift train`` reads): customers, offers, exposures, and ``experiment_truth``:
per customer and arm (control included), the expected ``visit``, ``conversion`` and ``spend`` and each one's
uplift over no e-mail (``<outcome>_uplift``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from nbo.units import DAY

VERSIONS = ("mens_email", "womens_email")
ARMS = ("control", *VERSIONS)
VISIT_RATE = {"control": 0.106, "mens_email": 0.183, "womens_email": 0.151}
CONVERSION_RATE = {"control": 0.0057, "mens_email": 0.0125, "womens_email": 0.0088}
MEDIAN_SPEND = 85.0  # per converting customer, before the past-spend effect (mean about 110)
HORIZON_DAYS = 14
LATENT_SD = 0.5  # spread of the visit propensity (logit) that no attribute explains
TRUTH_FILE = "experiment_truth.parquet"
OUTCOMES = ("visit", "conversion", "spend")


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function."""
    return 1.0 / (1.0 + np.exp(-x))


def calibrate_intercept(logit: np.ndarray, target: float, scale: np.ndarray | float = 1.0) -> float:
    """The shift c for which mean(scale x sigmoid(logit + c)) equals target (bisection)."""
    low, high = -20.0, 20.0
    for _ in range(80):
        middle = (low + high) / 2
        low, high = (middle, high) if np.mean(scale * sigmoid(logit + middle)) < target else (low, middle)
    return (low + high) / 2


def draw_customers(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Customer attributes in the public experiment's proportions."""
    months = np.arange(1, 13)
    lines = rng.choice(3, n, p=[0.45, 0.45, 0.10])  # mens only, womens only, both
    return pd.DataFrame(
        {
            "customer_id": [f"e{i:06d}" for i in range(n)],
            "recency": rng.choice(months, n, p=(14 - months) / (14 - months).sum()),
            "history": np.round(25 + rng.lognormal(4.95, 0.85, n), 2),
            "mens": (lines != 1).astype(int),
            "womens": (lines != 0).astype(int),
            "newbie": (rng.random(n) < 0.5).astype(int),
            "acquisition_channel": rng.choice(["Phone", "Web", "Multichannel"], n, p=[0.44, 0.44, 0.12]),
            "area": rng.choice(["Urban", "Suburban", "Rural"], n, p=[0.40, 0.45, 0.15]),
        }
    )


def compute_expected(people: pd.DataFrame, rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    """Per arm, each customer's true expected visit, conversion and spend."""
    recency, newbie = people["recency"].to_numpy(), people["newbie"].to_numpy()
    spent = np.log(people["history"].to_numpy() / 150.0)
    web = (people["acquisition_channel"] == "Web").to_numpy()
    multi = (people["acquisition_channel"] == "Multichannel").to_numpy()
    rural = (people["area"] == "Rural").to_numpy()
    base = -0.09 * (recency - 6) + 0.25 * spent + 0.25 * web + 0.15 * multi - 0.1 * newbie + 0.1 * rural
    base += rng.normal(0.0, LATENT_SD, len(people))  # how often a customer visits anyway, beyond the attributes
    base += calibrate_intercept(base, VISIT_RATE["control"])
    shared = 0.15 * (recency <= 3) - 0.1 * newbie + 0.05 * web + rng.normal(0.0, 0.15, len(people))
    match = {"mens_email": people["mens"].to_numpy(), "womens_email": people["womens"].to_numpy()}
    buy_logit = 0.3 * spent - 0.04 * (recency - 6)
    spend_given = MEDIAN_SPEND * np.exp(0.18 * spent + 0.5 * 0.6**2)
    expected = {}
    for arm in ARMS:
        effect = np.zeros(len(people))
        if arm != "control":
            effect = shared + np.where(match[arm] == 1, 0.15, -0.25)
            effect += calibrate_intercept(base + effect, VISIT_RATE[arm])
        visit = sigmoid(base + effect)
        buy = sigmoid(buy_logit + calibrate_intercept(buy_logit, CONVERSION_RATE[arm], visit))
        expected[arm] = {
            "visit": visit,
            "buy_given_visit": buy,
            "conversion": visit * buy,
            "spend": visit * buy * spend_given,
        }
    return expected


def draw_outcomes(
    rng: np.random.Generator, arm: np.ndarray, expected: dict[str, dict[str, np.ndarray]], history: np.ndarray
) -> pd.DataFrame:
    """Each customer's observed visit, conversion and spend under the arm drawn for them."""
    rows = np.arange(len(arm))
    visit_p = np.choose(arm, [expected[a]["visit"] for a in ARMS])
    buy_p = np.choose(arm, [expected[a]["buy_given_visit"] for a in ARMS])
    visit = rng.random(len(rows)) < visit_p
    conversion = visit & (rng.random(len(rows)) < buy_p)
    amount = MEDIAN_SPEND * np.exp(0.18 * np.log(history / 150.0) + rng.normal(0.0, 0.6, len(rows)))
    return pd.DataFrame(
        {
            "visit": visit.astype(int),
            "conversion": conversion.astype(int),
            "spend": np.where(conversion, np.round(amount, 2), 0.0),
        }
    )


def build_truth(people: pd.DataFrame, expected: dict[str, dict[str, np.ndarray]]) -> pd.DataFrame:
    """Per customer and arm: expected outcomes and their uplift over no e-mail."""
    parts = []
    for arm in ARMS:
        part = pd.DataFrame({"customer_id": people["customer_id"], "offer_id": arm})
        for outcome in OUTCOMES:
            part[outcome] = expected[arm][outcome]
            part[f"{outcome}_uplift"] = expected[arm][outcome] - expected["control"][outcome]
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def simulate_experiment(
    out_dir: Path, n_customers: int = 30_000, seed: int = 42, start: str = "2025-03-01"
) -> dict[str, object]:
    """Write customers, offers, exposures and experiment_truth parquet files into out_dir; return a summary."""
    if n_customers < 30:
        raise ValueError("the experiment needs at least 30 customers (10 per arm)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 21])
    people = draw_customers(rng, n_customers)
    expected = compute_expected(people, rng)
    arm = rng.permutation(np.arange(n_customers) % len(ARMS))
    sent = pd.Timestamp(start, tz="UTC").normalize() + pd.Timedelta(hours=10)
    outcomes = draw_outcomes(rng, arm, expected, people["history"].to_numpy())
    exposures = pd.DataFrame(
        {
            "customer_id": people["customer_id"],
            "offer_id": np.array(ARMS)[arm],
            "ts": sent,
            "channel": "email",
            "propensity": 1.0 / len(ARMS),
            "campaign_id": f"email-{sent:%Y-%m-%d}",
        }
    ).join(outcomes)
    offers = pd.DataFrame(
        {
            "offer_id": list(VERSIONS),
            "category": ["mens", "womens"],
            "valid_from": sent - DAY,
            "valid_to": sent + pd.Timedelta(days=365),
            "channels": "email",
        }
    )
    people.to_parquet(out_dir / "customers.parquet", index=False)
    offers.to_parquet(out_dir / "offers.parquet", index=False)
    exposures.to_parquet(out_dir / "exposures.parquet", index=False)
    build_truth(people, expected).to_parquet(out_dir / TRUTH_FILE, index=False)
    rates = exposures.groupby("offer_id")[list(OUTCOMES)].mean().round(4)
    return {
        "setting": "experiment",
        "customers": n_customers,
        "send_date": f"{sent:%Y-%m-%d}",
        "horizon_days": HORIZON_DAYS,
        "observed": rates.to_dict(orient="index"),
    }


def load_experiment_truth(raw: Path, outcome: str) -> Callable[[np.ndarray, np.ndarray, pd.Series], np.ndarray] | None:
    """True uplift of (customer, offer) on outcome from raw/experiment_truth.parquet, or None without it."""
    path = Path(raw) / TRUTH_FILE
    if not path.exists():
        return None
    truth = pd.read_parquet(path)
    if f"{outcome}_uplift" not in truth.columns:
        return None
    table = truth.set_index(["customer_id", "offer_id"])[f"{outcome}_uplift"]

    def true_uplift(customer_ids: np.ndarray, offer_ids: np.ndarray, ts: pd.Series) -> np.ndarray:
        keys = pd.MultiIndex.from_arrays([np.asarray(customer_ids, dtype=object), np.asarray(offer_ids, dtype=object)])
        return table.reindex(keys).to_numpy(dtype=float)

    return true_uplift
