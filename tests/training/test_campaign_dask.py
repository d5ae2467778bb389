"""`nbo campaign --dask`: partitions scored on Dask workers select exactly what one process selects."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from serving.rules import ControlGroup
from simulator.generate import simulate
from training.uplift.campaign import leave_out_control, score_best_offers
from training.uplift.campaign_dask import CampaignSpec, plan_campaign_dask, plan_partitions
from training.uplift.guard import choose_campaign
from training.uplift.model import build_offer_table, fit_uplift, prepare_exposures, save_uplift
from training.uplift.train import UPLIFT_FOLDER

NOW = pd.Timestamp("2025-04-01 06:00", tz="UTC")


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A small simulated retailer's uplift model, and its customers in a Parquet file of 100-row row groups."""
    home = tmp_path_factory.mktemp("dask_campaign")
    simulate(home / "simulated", 1200, 90, seed=3, start="2025-01-01")
    customers = pd.read_parquet(home / "simulated" / "customers.parquet")
    offers = pd.read_parquet(home / "simulated" / "offers.parquet")
    exposures = pd.read_parquet(home / "simulated" / "exposures.parquet")
    table = build_offer_table(exposures, offers)
    model = fit_uplift(customers, prepare_exposures(exposures), table, "converted")
    save_uplift(model, home / UPLIFT_FOLDER)
    customers.to_parquet(home / "customers.parquet", row_group_size=100)
    return home, model, customers, offers


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        with Client(cluster) as connected:
            yield connected


def test_partitions_are_runs_of_whole_row_groups_in_table_order(shop):
    home = shop[0]
    partitions, total = plan_partitions([home / "customers.parquet"], rows=250)
    assert total == 1200 and len(partitions) == 4  # 300 rows each: row groups are never split
    assert [groups for part in partitions for _, groups in part] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]


@pytest.mark.parametrize(
    ("by_model", "budget", "channel"), [(True, 0.2, "email"), (True, 1.0, "web"), (False, 0.3, "email")]
)
def test_dask_campaign_selects_what_one_process_selects(shop, client, tmp_path, by_model, budget, channel):
    home, model, customers, offers = shop
    effects = dict.fromkeys(offers["offer_id"].astype(str), 0.01) | {str(offers["offer_id"].iloc[2]): 0.05}
    targeting = {"by_model": by_model, "reason": "as the test says", "offer_effects": effects}
    (home / UPLIFT_FOLDER / "report.json").write_text(json.dumps({"targeting": targeting}))
    spec = CampaignSpec(home, model, offers, None, channel, NOW, {}, ControlGroup(share=0.1))
    planned = plan_campaign_dask(client, spec, [home / "customers.parquet"], budget, tmp_path / "parts", rows=250)

    best, eligible = score_best_offers(model, customers, offers, channel, NOW, {})
    best, eligible, held_out = leave_out_control(best, eligible, spec.control)
    chosen, sent, _ = choose_campaign(home / UPLIFT_FOLDER, model, best, offers, channel, NOW, budget, eligible)
    assert len(chosen) > 50 and chosen["expected_value"].duplicated().any()  # ties: customers sharing a profile
    pd.testing.assert_frame_equal(planned.chosen.reset_index(drop=True), chosen.reset_index(drop=True))
    assert (planned.eligible, planned.held_out, planned.sent) == (eligible, held_out, sent)
    parts = pd.concat([pd.read_parquet(p) for p in planned.parts], ignore_index=True)
    assert len(planned.parts) == 4
    pd.testing.assert_frame_equal(parts, best.reset_index(drop=True))  # every eligible customer's best offer, once


def test_a_customer_in_two_partitions_is_refused(shop, client, tmp_path):
    home, model, customers, offers = shop
    (home / UPLIFT_FOLDER / "report.json").write_text(json.dumps({"targeting": {"by_model": True, "reason": "test"}}))
    pd.concat([customers, customers.head(1)]).to_parquet(tmp_path / "twice.parquet", row_group_size=600)
    spec = CampaignSpec(home, model, offers, None, "web", NOW, {}, ControlGroup(share=0.0))
    with pytest.raises(ValueError, match="repeats"):
        plan_campaign_dask(client, spec, [tmp_path / "twice.parquet"], 1.0, tmp_path / "parts", rows=600)
