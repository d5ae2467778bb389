"""Campaign planning for the service: segment, opt-in, opt-outs, weekly e-mail cap, the global control group left
out, then the selection the targeting guard allows (the model's, or the best single offer: training.uplift.guard).
The request is checked at once (``check_campaign``); the plan itself runs as a job (serving.campaign_jobs)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from features.pipeline import read_raw
from features.privacy import drop_opted_out
from nbo.config import Paths
from nbo.units import DAY_SECONDS
from serving.clock import service_now
from serving.recommender import Recommender
from training.champions import UPLIFT, require_champion
from training.lifetime.values import read_tiers
from training.uplift.campaign import leave_out_control, score_best_offers
from training.uplift.guard import choose_campaign
from training.uplift.model import UpliftModel, eligible_customers, join_customers, load_uplift
from training.uplift.train import UPLIFT_FOLDER


@dataclass(frozen=True)
class CampaignPlan:
    """The chosen (customer, offer) rows, best first; the eligible customers outside the control group; those the
    control group held out; and what was sent and why."""

    chosen: pd.DataFrame
    eligible: int
    held_out: int
    targeting: str


def check_campaign(paths: Paths, channel: str, segment: dict[str, str]) -> tuple[UpliftModel, pd.DataFrame]:
    """The uplift model and the customers a campaign starts from (attributes joined with their tiers);
    FileNotFoundError without an uplift model, ValueError for a segment column no customer has."""
    model = load_uplift(require_champion(paths, UPLIFT))  # the registry's champion, installed at HOME/uplift
    customers = join_customers(read_raw(paths, "customers"), read_tiers(paths))
    eligible_customers(customers.iloc[:0], channel, segment)
    return model, customers


def plan_campaign(
    paths: Paths,
    recommender: Recommender,
    budget: float,
    channel: str,
    segment: dict[str, str],
    checked: tuple[UpliftModel, pd.DataFrame] | None = None,
) -> CampaignPlan:
    """The campaign under a contact budget, from check_campaign's model and customers (checked now when None)."""
    model, customers = checked or check_campaign(paths, channel, segment)
    now = service_now()
    contacted = recommender.log.contacted(channel, int(now.timestamp()) - 7 * DAY_SECONDS)
    customers = drop_opted_out(paths, customers[~customers["customer_id"].isin(contacted)])
    best, eligible = score_best_offers(model, customers, recommender.offers, channel, now, segment)
    best, eligible, held_out = leave_out_control(best, eligible, recommender.control)
    chosen, sent, targeting = choose_campaign(
        paths.home / UPLIFT_FOLDER, model, best, recommender.offers, channel, now, budget, eligible
    )
    return CampaignPlan(chosen.reset_index(drop=True), eligible, held_out, f"{sent}: {targeting['reason']}")
