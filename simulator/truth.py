"""Ground truth: each customer's latent purchase process, and the true purchase probability with or
without an offer, so that an oracle policy and regret can be computed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nbo.units import DAY_NS
from simulator.campaigns import HORIZON_DAYS
from simulator.catalog import CATEGORY_NAMES
from simulator.population import Population, compute_daily_rate, compute_offer_multiplier

META_KEY = b"nbo_truth"
PARAMS = ("rate", "decay", "active_from", "active_to", "uplift", "fatigue", "price_sensitivity", "newsletters")


def build_truth_table(pop: Population, start_ns: int) -> pa.Table:
    """Per-customer latent parameters, with the start date and horizon in the file metadata."""
    columns = {"customer_id": pa.array(pop.ids, pa.string())}
    columns |= {name: pa.array(getattr(pop, name)) for name in PARAMS}
    columns |= {f"affinity_{k}": pa.array(pop.affinity[:, i]) for i, k in enumerate(CATEGORY_NAMES)}
    meta = {"start_ns": int(start_ns), "horizon_days": HORIZON_DAYS, "categories": list(CATEGORY_NAMES)}
    return pa.table(columns).replace_schema_metadata({META_KEY: json.dumps(meta).encode()})


@dataclass
class Truth:
    """The simulator's hidden state; days count from the simulation start."""

    params: pd.DataFrame
    affinity: np.ndarray
    offer_category: pd.Series
    offer_discount: pd.Series
    start_ns: int
    horizon_days: int

    def purchase_probability(
        self,
        customer_ids: np.ndarray | pd.Series | list,
        offer_ids: np.ndarray | pd.Series | list,
        ts: np.ndarray | pd.Series | list,
        with_offer: bool,
        horizon_days: int | None = None,
    ) -> np.ndarray:
        """True probability of buying in the offer's category within the horizon starting on ts's day.

        with_offer=True: the offer is in force over the whole horizon; False: no offer at all.
        """
        rows = self.params.index.get_indexer(pd.Index(np.asarray(customer_ids, dtype=object)))
        if (rows < 0).any():
            raise KeyError("unknown customer id(s) in purchase_probability")
        offers = pd.Index(np.asarray(offer_ids, dtype=object))
        category = self.offer_category.reindex(offers).to_numpy()
        if pd.isna(category).any():
            raise KeyError("unknown offer id(s) in purchase_probability")
        stamps = pd.DatetimeIndex(pd.to_datetime(ts, utc=True)).as_unit("ns").asi8
        first_day = np.floor_divide(stamps - self.start_ns, DAY_NS)
        p = self.params.iloc[rows]
        expected = np.zeros(len(rows))
        for h in range(horizon_days or self.horizon_days):
            expected += compute_daily_rate(
                p["rate"].to_numpy(),
                p["decay"].to_numpy(),
                p["active_from"].to_numpy(),
                p["active_to"].to_numpy(),
                first_day + h,
                self.start_ns // DAY_NS,
            )
        expected *= self.affinity[rows, category.astype(np.int64)]
        if with_offer:
            expected *= compute_offer_multiplier(
                p["uplift"].to_numpy(),
                p["price_sensitivity"].to_numpy(),
                p["fatigue"].to_numpy(),
                p["newsletters"].to_numpy(),
                self.offer_discount.reindex(offers).to_numpy(),
            )
        return 1.0 - np.exp(-expected)

    def uplift(
        self,
        customer_ids: np.ndarray | pd.Series | list,
        offer_ids: np.ndarray | pd.Series | list,
        ts: np.ndarray | pd.Series | list,
    ) -> np.ndarray:
        """True change in purchase probability caused by the offer (negative: the offer puts them off)."""
        return self.purchase_probability(customer_ids, offer_ids, ts, True) - self.purchase_probability(
            customer_ids, offer_ids, ts, False
        )


def load_truth(out_dir: Path | str) -> Truth:
    """Read truth.parquet and offers.parquet written by simulate()."""
    table = pq.read_table(Path(out_dir) / "truth.parquet")
    meta = json.loads(table.schema.metadata[META_KEY])
    frame = table.to_pandas().set_index("customer_id")
    affinity = frame[[f"affinity_{k}" for k in meta["categories"]]].to_numpy()
    offers = pd.read_parquet(Path(out_dir) / "offers.parquet").set_index("offer_id")
    codes = pd.Series(range(len(meta["categories"])), index=meta["categories"])
    return Truth(
        frame[list(PARAMS)],
        affinity,
        offers["category"].map(codes),
        offers["discount"],
        meta["start_ns"],
        meta["horizon_days"],
    )
