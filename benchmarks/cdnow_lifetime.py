"""CDNOW repeat-purchase benchmark: our LightGBM CLV model vs BG/NBD.

Classic protocol: calibration 1997-01-01..1997-09-30, holdout
1997-10-01..1998-06-30, customers split 50/50 at random (fixed seed). Our
model learns on the training half (holdout labels included) and is scored on
the test half. Rows from earlier cutoffs come from every customer's calibration
history, the data BG/NBD is fitted on; the test half's holdout is never read. BG/NBD (``lifetimes``) runs as a
subprocess in a separate virtualenv (it needs pandas<2 / numpy<2); see docs/lifetime.md.

    .venv/bin/python benchmarks/cdnow_lifetime.py [--btyd-python PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from nbo.units import DAY

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "../shared/data/cdnow/CDNOW_master.txt"
HOLDOUT_START = pd.Timestamp("1997-10-01")
HORIZON_DAYS = 273  # 1997-10-01 .. 1998-06-30 inclusive
EXTRA_CUTOFFS = ("1997-04-01", "1997-05-01", "1997-06-01", "1997-07-01", "1997-08-01")


def load_cdnow(path: Path = DATA) -> pd.DataFrame:
    """Read CDNOW_master.txt into the generic ``customer_id, ts, amount`` frame."""
    raw = pd.read_csv(path, sep=r"\s+", dtype={"customer_id": str, "date": str})
    return pd.DataFrame(
        {
            "customer_id": raw["customer_id"],
            "ts": pd.to_datetime(raw["date"], format="%Y%m%d"),
            "amount": raw["dollar_value"].astype("float64"),
        }
    )


def split_customers(tx: pd.DataFrame, seed: int, method: str = "rng") -> tuple[set[str], set[str]]:
    """Random 50/50 split of customer ids (train, test).

    ``rng``: second half of ``numpy.random.default_rng(seed)``'s permutation.
    ``pandas-sample``: the test half is ``Series(ids).sample(frac=0.5,
    random_state=seed)``, the split behind the reference BG/NBD figures (seed 0).
    """
    ids = np.sort(tx["customer_id"].unique())
    if method == "pandas-sample":
        test = set(pd.Series(ids).sample(frac=0.5, random_state=seed))
        return set(ids) - test, test
    perm = np.random.default_rng(seed).permutation(ids)
    half = len(ids) // 2
    return set(perm[:half]), set(perm[half:])


def score(actual: np.ndarray, expected: np.ndarray, ranking: np.ndarray) -> dict[str, float]:
    """AUC of buys-again, RMSE/MAE of purchase days, totals and % error."""
    from sklearn.metrics import roc_auc_score

    err = expected - actual
    return {
        "AUC": roc_auc_score(actual > 0, ranking),
        "RMSE": float(np.sqrt(np.mean(err**2))),
        "MAE": float(np.mean(np.abs(err))),
        "total_pred": float(expected.sum()),
        "total_actual": float(actual.sum()),
        "total_err_%": 100.0 * (expected.sum() / actual.sum() - 1.0),
    }


def predict_ours(tx: pd.DataFrame, train: set[str], test: set[str], seed: int) -> pd.DataFrame:
    """Fit on the training half's labels, predict the test half at the holdout start.

    Earlier-cutoff rows are labelled within the calibration period, from every customer's history.
    """
    from training.lifetime.model import build_training_set, fit_lifetime_model, predict_repeat_purchases

    train_tx = tx.loc[tx["customer_id"].isin(train)]
    test_tx = tx.loc[tx["customer_id"].isin(test)]
    data = build_training_set(
        train_tx, HOLDOUT_START, HORIZON_DAYS, EXTRA_CUTOFFS, history=tx.loc[tx["ts"] < HOLDOUT_START]
    )
    model = fit_lifetime_model(data, seed=seed, n_jobs=2)
    return predict_repeat_purchases(model, test_tx, HOLDOUT_START, HORIZON_DAYS)


def predict_bgnbd(tx: pd.DataFrame, test: set[str], python: str) -> pd.DataFrame:
    """Run BG/NBD in the btyd virtualenv: fit on all calibration data, predict test."""
    calibration = tx.loc[tx["ts"] < HOLDOUT_START, ["customer_id", "ts"]]
    calibration = calibration.assign(is_test=calibration["customer_id"].isin(test))
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "calibration.csv", Path(tmp) / "bgnbd.csv"
        calibration.to_csv(src, index=False)
        cmd = [python, __file__, "--bgnbd-worker", str(src), str(dst)]
        subprocess.run(cmd, check=True)
        return pd.read_csv(dst, index_col=0, dtype={"customer_id": str})


def run_bgnbd_worker(src: str, dst: str) -> None:
    """Inside the btyd venv: fit BetaGeoFitter and write test-half predictions.

    lifetimes' own summary in days (repeat days, recency, T up to the last
    calibration day 1997-09-30, as in the classic data), then weeks.
    """
    from lifetimes import BetaGeoFitter
    from lifetimes.utils import summary_data_from_transaction_data

    tx = pd.read_csv(src, dtype={"customer_id": str}, parse_dates=["ts"])
    last_day = HOLDOUT_START - DAY
    cal = summary_data_from_transaction_data(tx, "customer_id", "ts", freq="D", observation_period_end=last_day)
    cal[["recency", "T"]] = cal[["recency", "T"]] / 7.0
    bgf = BetaGeoFitter(penalizer_coef=0.0)
    bgf.fit(cal["frequency"], cal["recency"], cal["T"])
    test = cal.loc[tx.loc[tx["is_test"], "customer_id"].unique()]
    weeks = HORIZON_DAYS / 7.0
    out = pd.DataFrame(
        {
            "expected_purchases": bgf.conditional_expected_number_of_purchases_up_to_time(
                weeks, test["frequency"], test["recency"], test["T"]
            ),
        },
        index=test.index,
    )
    out.to_csv(dst)
    print("BG/NBD params:", json.dumps({k: round(float(v), 4) for k, v in bgf.params_.items()}))


def main() -> None:
    """Run both models on the same split and print metrics side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--split", choices=("rng", "pandas-sample"), default="rng")
    parser.add_argument("--btyd-python", default="/tmp/nbo-btyd-venv/bin/python")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    tx = load_cdnow()
    train, test = split_customers(tx, args.seed, args.split)
    ours = predict_ours(tx, train, test, args.seed)
    actual = _holdout_days(tx, ours.index)
    bg = predict_bgnbd(tx, test, args.btyd_python).reindex(ours.index)
    rows = {
        "ours (LightGBM)": score(actual, ours["expected_purchases"].to_numpy(), ours["p_buy_again"].to_numpy()),
        "BG/NBD": score(actual, bg["expected_purchases"].to_numpy(), bg["expected_purchases"].to_numpy()),
    }
    print(f"seed={args.seed} split={args.split}  train={len(train)}  test={len(test)} customers")
    print(pd.DataFrame(rows).T.round(4).to_string())


def _holdout_days(tx: pd.DataFrame, index: pd.Index) -> np.ndarray:
    """Actual holdout purchase days for the customers in ``index``."""
    from training.lifetime.model import build_labels

    labels = build_labels(tx, HOLDOUT_START, HORIZON_DAYS)
    return labels.reindex(index, fill_value=0).to_numpy(dtype="float64")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--bgnbd-worker":
        run_bgnbd_worker(sys.argv[2], sys.argv[3])
    else:
        main()
