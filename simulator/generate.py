"""Omnichannel behaviour simulator with ground truth: what `nbo generate` runs.

Customers are simulated in fixed chunks (deterministic for a seed); each chunk's events are sorted by
time and appended to events.parquet as one or more row groups, so memory stays bounded.
"""

from __future__ import annotations

import time
from contextlib import ExitStack, nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from nbo.units import DAY_NS
from simulator.browsing import emit_browsing
from simulator.campaigns import assign_offers, emit_exposure_events, emit_newsletters, spread_offers
from simulator.catalog import CATEGORY_NAMES, Catalog, build_catalog
from simulator.events import EVENTS_SCHEMA, Dictionaries, EventBuffer
from simulator.journeys import JOURNEYS, compute_base_rates, draw_purchases, emit_journeys, emit_returns
from simulator.population import Population, build_population
from simulator.tables import build_customers, build_exposures, build_items, build_offers
from simulator.truth import Truth, build_truth_table, load_truth

__all__ = ["simulate", "load_truth", "Truth"]
CHUNK_CUSTOMERS = 2000
SESSIONS_PER_CHUNK = 10**8


def simulate(
    out_dir: Path, n_customers: int, days: int, seed: int, start: str = "2025-01-01", progress: bool = False
) -> dict[str, object]:
    """Write events, customers, items, offers, exposures and truth parquet files; return a summary."""
    if n_customers < 1 or days < 1:
        raise ValueError("n_customers and days must be at least 1")
    began = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start_ns = pd.Timestamp(start, tz="UTC").normalize().value
    start_epoch_day = start_ns // DAY_NS
    rng = np.random.default_rng([seed, 0])
    cat = build_catalog(rng, min(3000, max(300, n_customers // 5)), days)
    pop = build_population(rng, n_customers, days)
    names = _build_dictionaries(pop, cat, start_ns, days)
    campaign_base = days * len(CATEGORY_NAMES)
    spend = np.zeros(n_customers)
    stats = {"events": 0, "anonymous_events": 0, "exposures": 0, "control": 0, "offer_purchases": 0}
    journeys = np.zeros(len(JOURNEYS), dtype=np.int64)
    n_chunks = -(-n_customers // CHUNK_CUSTOMERS)
    with ExitStack() as stack:
        events = stack.enter_context(pq.ParquetWriter(out_dir / "events.parquet", EVENTS_SCHEMA))
        bar = stack.enter_context(_open_progress(progress))
        task = bar.add_task("simulating", total=n_chunks) if bar else None
        exposures = None
        for chunk in range(n_chunks):
            crng = np.random.default_rng([seed, 1, chunk])
            customers = np.arange(chunk * CHUNK_CUSTOMERS, min((chunk + 1) * CHUNK_CUSTOMERS, n_customers))
            exp = assign_offers(crng, pop, cat, customers, start_epoch_day, start_ns, days)
            offer_cd, mult_cd = spread_offers(exp, int(customers[0]), len(customers), days)
            base = compute_base_rates(pop, customers, start_epoch_day, days)
            pur = draw_purchases(crng, pop, cat, customers, base, offer_cd, mult_cd, start_ns, start_epoch_day)
            buf = EventBuffer()
            session = chunk * SESSIONS_PER_CHUNK
            session += emit_journeys(crng, buf, pur, start_ns, session)
            emit_returns(crng, buf, pur)
            session += emit_browsing(crng, buf, pop, cat, customers, base, offer_cd, start_ns, session)
            emit_exposure_events(crng, buf, pop, cat, exp, campaign_base, session)
            emit_newsletters(crng, buf, pop, customers, start_ns, days)
            table = buf.build_table(names, stats["events"], start_ns + days * DAY_NS)
            events.write_table(table)
            shown = build_exposures(exp, pur, pop, cat, names.campaigns, campaign_base, days)
            exposures = exposures or stack.enter_context(pq.ParquetWriter(out_dir / "exposures.parquet", shown.schema))
            exposures.write_table(shown)
            np.add.at(spend, pur.customer, pur.amount)
            journeys += np.bincount(pur.journey, minlength=len(JOURNEYS))
            stats["events"] += table.num_rows
            stats["anonymous_events"] += table["customer_id"].null_count
            stats["exposures"] += len(exp.day)
            stats["control"] += int((~exp.treated).sum())
            stats["offer_purchases"] += int((pur.offer >= 0).sum())
            if bar:
                bar.advance(task)
    _write_tables(out_dir, pop, cat, start_ns, seed)
    return _summarise(
        stats, spend, journeys, n_customers, len(cat.item_ids), len(cat.offer_ids), time.perf_counter() - began
    )


def _build_dictionaries(pop: Population, cat: Catalog, start_ns: int, days: int) -> Dictionaries:
    """Text tables the integer event codes point to."""
    dates = pd.date_range(pd.Timestamp(start_ns, tz="UTC"), periods=days, freq="D").strftime("%Y-%m-%d")
    newsletters = [f"nl-{d}-{k}" for d in dates for k in CATEGORY_NAMES]
    offers = [f"cmp-{d}" for d in dates]
    return Dictionaries(
        pa.array(pop.ids, pa.string()),
        pa.array(pop.anon_ids, pa.string()),
        pa.array(cat.item_ids, pa.string()),
        pa.array(CATEGORY_NAMES, pa.string()),
        pa.array(cat.offer_ids, pa.string()),
        pa.array(newsletters + offers, pa.string()),
    )


def _open_progress(show: bool) -> Progress | nullcontext:
    """A rich progress bar over chunks, or nothing."""
    if not show:
        return nullcontext()
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())


def _write_tables(out_dir: Path, pop: Population, cat: Catalog, start_ns: int, seed: int) -> None:
    """Customers, items, offers and truth files."""
    rng = np.random.default_rng([seed, 2])
    pq.write_table(build_customers(pop, start_ns, rng), out_dir / "customers.parquet")
    pq.write_table(build_items(cat, start_ns), out_dir / "items.parquet")
    pq.write_table(build_offers(cat, start_ns), out_dir / "offers.parquet")
    pq.write_table(build_truth_table(pop, start_ns), out_dir / "truth.parquet")


def _summarise(
    stats: dict[str, int],
    spend: np.ndarray,
    journeys: np.ndarray,
    n_customers: int,
    n_items: int,
    n_offers: int,
    seconds: float,
) -> dict[str, object]:
    """Counts and realism figures of one run."""
    count = dict(zip(JOURNEYS, journeys.tolist()))
    store = count["ropo"] + count["store"]
    online = count["online"] + count["cross_device"] + count["showrooming"]
    top = np.sort(spend)[::-1][: max(1, int(round(0.15 * n_customers)))]
    purchases = int(journeys.sum())
    return {
        "customers": n_customers,
        "items": n_items,
        "offers": n_offers,
        "events": stats["events"],
        "purchases": purchases,
        "revenue": round(float(spend.sum()), 2),
        "exposures": stats["exposures"],
        "top15_revenue_share": round(float(top.sum() / max(spend.sum(), 1e-9)), 3),
        "ropo_share": round(count["ropo"] / max(store, 1), 3),
        "showrooming_share": round(count["showrooming"] / max(online, 1), 3),
        "cross_device_share": round(count["cross_device"] / max(online, 1), 3),
        "anonymous_event_share": round(stats["anonymous_events"] / max(stats["events"], 1), 3),
        "control_share": round(stats["control"] / max(stats["exposures"], 1), 3),
        "offer_purchase_share": round(stats["offer_purchases"] / max(purchases, 1), 3),
        "seconds": round(seconds, 2),
        "events_per_second": round(stats["events"] / max(seconds, 1e-9)),
    }
