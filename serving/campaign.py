"""Campaign planning for the service: segment, opt-in, opt-outs, weekly e-mail cap, the global control group left
out, then the uplift selection."""

from __future__ import annotations

import pandas as pd

from features.pipeline import read_raw
from features.privacy import drop_opted_out
from nbo.config import Paths
from serving.clock import service_now
from serving.recommender import Recommender
from serving.rules import DAY
from training.lifetime import read_tiers
from training.uplift import join_customers, load_uplift, select_campaign
from training.uplift_campaign import leave_out_control, score_best_offers


def plan_campaign(paths: Paths, recommender: Recommender, budget: float, channel: str,
                  segment: dict[str, str]) -> tuple[pd.DataFrame, int, int]:
    """The chosen (customer, offer) rows, the number of eligible customers outside the control group and the
    number of eligible customers the control group held out."""
    model = load_uplift(paths.home / "uplift")
    customers = join_customers(read_raw(paths, "customers"), read_tiers(paths))
    now = service_now()
    contacted = recommender.log.contacted(channel, int(now.timestamp()) - 7 * DAY)
    customers = drop_opted_out(paths, customers[~customers["customer_id"].isin(contacted)])
    best, eligible = score_best_offers(model, customers, recommender.offers, channel, now, segment)
    best, eligible, held_out = leave_out_control(best, eligible, recommender.control)
    return select_campaign(best, budget, eligible), eligible, held_out
