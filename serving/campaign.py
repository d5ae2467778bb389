"""Campaign planning for the service: segment, opt-in, opt-outs, weekly e-mail cap, the global control group left
out, then the selection the targeting guard allows (the model's, or the best single offer: training.uplift.guard)."""

from __future__ import annotations

import pandas as pd

from features.pipeline import read_raw
from features.privacy import drop_opted_out
from nbo.config import Paths
from nbo.units import DAY_SECONDS
from serving.clock import service_now
from serving.recommender import Recommender
from training.lifetime.values import read_tiers
from training.uplift.campaign import leave_out_control, score_best_offers
from training.uplift.guard import choose_campaign
from training.uplift.model import join_customers, load_uplift
from training.uplift.train import UPLIFT_FOLDER


def plan_campaign(
    paths: Paths, recommender: Recommender, budget: float, channel: str, segment: dict[str, str]
) -> tuple[pd.DataFrame, int, int, str]:
    """The chosen (customer, offer) rows, the number of eligible customers outside the control group, the
    number of eligible customers the control group held out, and what was sent and why."""
    model = load_uplift(paths.home / UPLIFT_FOLDER)
    customers = join_customers(read_raw(paths, "customers"), read_tiers(paths))
    now = service_now()
    contacted = recommender.log.contacted(channel, int(now.timestamp()) - 7 * DAY_SECONDS)
    customers = drop_opted_out(paths, customers[~customers["customer_id"].isin(contacted)])
    best, eligible = score_best_offers(model, customers, recommender.offers, channel, now, segment)
    best, eligible, held_out = leave_out_control(best, eligible, recommender.control)
    chosen, sent, targeting = choose_campaign(
        paths.home / UPLIFT_FOLDER, model, best, recommender.offers, channel, now, budget, eligible
    )
    return chosen, eligible, held_out, f"{sent}: {targeting['reason']}"
