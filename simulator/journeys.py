"""Purchases drawn from the true rates, and the cross-channel journeys and returns around them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nbo.units import DAY_NS
from simulator.calendar import HOUR_NS, SALE_MARKDOWN, mark_sale_days
from simulator.catalog import EXTRA_UNITS, RETURN_RATE, Catalog
from simulator.events import CH, EV, EventBuffer, draw_times_of_day
from simulator.population import Population, compute_daily_rate

JOURNEYS = ("online", "cross_device", "ropo", "store", "showrooming", "call")
# per journey: (slot, event, known, with item); slot 0 comes before the purchase slot 1
TEMPLATES = {
    "online": (
        (1, "page_view", 0, 0),
        (1, "search", 0, 0),
        (1, "product_view", 0, 1),
        (1, "login", 1, 0),
        (1, "add_to_cart", 1, 1),
        (1, "purchase", 1, 1),
    ),
    "cross_device": (
        (0, "page_view", 0, 0),
        (0, "login", 1, 0),
        (0, "product_view", 1, 1),
        (0, "add_to_cart", 1, 1),
        (1, "page_view", 0, 0),
        (1, "login", 1, 0),
        (1, "purchase", 1, 1),
    ),
    "ropo": (
        (0, "page_view", 0, 0),
        (0, "search", 0, 0),
        (0, "product_view", 0, 1),
        (0, "product_view", 0, 1),
        (1, "login", 1, 0),
        (1, "purchase", 1, 1),
    ),
    "store": ((1, "login", 1, 0), (1, "purchase", 1, 1)),
    "showrooming": (
        (0, "login", 1, 0),
        (0, "product_view", 1, 1),
        (1, "page_view", 0, 0),
        (1, "login", 1, 0),
        (1, "purchase", 1, 1),
    ),
    "call": ((1, "login", 1, 0), (1, "purchase", 1, 1)),
}
STEP_NS = 45 * 10**9
RESEARCH_DAYS = 3  # longest gap between research and purchase


@dataclass
class Purchases:
    """One row per purchase; customer indices are global, journey indexes JOURNEYS."""

    customer: np.ndarray
    day: np.ndarray
    ts: np.ndarray
    category: np.ndarray
    item: np.ndarray
    quantity: np.ndarray
    amount: np.ndarray
    offer: np.ndarray
    journey: np.ndarray
    devices: np.ndarray  # (n, 2): anonymous-id kind of slot 0 and slot 1, -1 none
    channels: np.ndarray  # (n, 2): channel code of slot 0 and slot 1


def compute_base_rates(pop: Population, customers: np.ndarray, start_epoch_day: int, days: int) -> np.ndarray:
    """Expected purchases per (customer, day) without any offer."""
    return compute_daily_rate(
        pop.rate[customers][:, None],
        pop.decay[customers][:, None],
        pop.active_from[customers][:, None],
        pop.active_to[customers][:, None],
        np.arange(days)[None, :],
        start_epoch_day,
    )


def draw_purchases(
    rng: np.random.Generator,
    pop: Population,
    cat: Catalog,
    customers: np.ndarray,
    base: np.ndarray,
    offer_cd: np.ndarray,
    mult_cd: np.ndarray,
    start_ns: int,
    start_epoch_day: int,
) -> Purchases:
    """Poisson purchases per customer-day, split over categories; an offer in force scales its category."""
    k_off = np.where(offer_cd >= 0, cat.offer_category[np.maximum(offer_cd, 0)], 0)
    aff_off = np.take_along_axis(pop.affinity[customers], k_off, axis=1) * (offer_cd >= 0)
    count = rng.poisson(base * (1 + aff_off * (mult_cd - 1)))
    row, day = np.nonzero(count)
    row, day = np.repeat(row, count[row, day]), np.repeat(day, count[row, day])
    c, offer, mult = customers[row], offer_cd[row, day], mult_cd[row, day]
    probs = pop.affinity[c].copy()
    on = np.flatnonzero(offer >= 0)
    probs[on, cat.offer_category[offer[on]]] *= mult[on]
    cum = np.cumsum(probs, axis=1)
    k = np.minimum((rng.random(len(c))[:, None] * cum[:, -1:] > cum).sum(axis=1), probs.shape[1] - 1)
    journey, devices, channels = _choose_journeys(rng, pop, c)
    used = (offer >= 0) & (k == cat.offer_category[np.maximum(offer, 0)])
    used &= cat.offer_channels[np.maximum(offer, 0), channels[:, 1]]
    offer = np.where(used, offer, -1)
    item = cat.sample_items(rng, k, day - RESEARCH_DAYS)  # launched before the research starts
    for o in np.unique(offer[used]):
        if len(cat.offer_items[o]):
            rows = np.flatnonzero(offer == o)
            item[rows] = rng.choice(cat.offer_items[o], size=len(rows))
    quantity = 1.0 + rng.poisson(EXTRA_UNITS[k])
    markdown = np.where(mark_sale_days(start_epoch_day + day), 1 - SALE_MARKDOWN, 1.0)
    discount = np.where(used, cat.discount[np.maximum(offer, 0)], 0.0)
    amount = np.round(cat.price[item] * quantity * markdown * (1 - discount), 2)
    store_like = channels[:, 1] == CH["store"]
    tod = np.where(
        store_like, 9 * HOUR_NS + rng.integers(0, 11 * HOUR_NS, len(c)), draw_times_of_day(rng, len(c), 8, 22)
    )
    return Purchases(
        c, day, start_ns + day * DAY_NS + tod, k, item, quantity, amount, offer, journey, devices, channels
    )


def _choose_journeys(rng: np.random.Generator, pop: Population, c: np.ndarray) -> tuple[np.ndarray, ...]:
    """Journey type per purchase from channel mix, research habits and devices owned."""
    n = len(c)
    mix = np.cumsum(pop.channel_mix[c], axis=1)
    group = (rng.random(n)[:, None] > mix).sum(axis=1).clip(0, 2)
    u = rng.random(n)
    online_dev = np.where(
        pop.devices[c, 0] & (~pop.devices[c, 1] | (rng.random(n) < pop.app_share[c])),
        0,
        np.where(pop.devices[c, 2] & (rng.random(n) < 0.3), 2, 1),
    )
    both = pop.devices[c, 0] & pop.devices[c, 1]
    journey = np.select(
        [
            group == 2,
            (group == 1) & (u < pop.research_rate[c]),
            group == 1,
            u < pop.showroom_rate[c] * (pop.channel_mix[c, 1] > 0.1),
            both & (u > 0.7),
        ],
        [5, 2, 3, 4, 1],
        default=0,
    )
    online_ch = np.where(online_dev == 0, CH["app"], CH["web"])
    dev0 = np.select([journey == 1, journey == 2, journey == 4], [0, online_dev, 3], default=-1)
    ch0 = np.select([journey == 1, journey == 2, journey == 4], [CH["app"], online_ch, CH["store"]], default=0)
    dev1 = np.select([journey == 1, (journey == 2) | (journey == 3), journey == 5], [1, 3, -1], default=online_dev)
    ch1 = np.select(
        [journey == 1, (journey == 2) | (journey == 3), journey == 5],
        [CH["web"], CH["store"], CH["call_center"]],
        default=online_ch,
    )
    return journey, np.column_stack([dev0, dev1]), np.column_stack([ch0, ch1])


def emit_journeys(rng: np.random.Generator, buf: EventBuffer, pur: Purchases, start_ns: int, session_base: int) -> int:
    """Events of every purchase journey; returns how many session numbers were used."""
    lag = rng.uniform(1, 24 * RESEARCH_DAYS, len(pur.ts)) * HOUR_NS
    lag = np.where(pur.journey == 1, lag / 3, lag)
    t0 = pur.ts - lag.astype(np.int64)
    early = t0 < start_ns
    t0[early] = start_ns + ((pur.ts[early] - start_ns) * rng.uniform(0, 0.5, int(early.sum()))).astype(np.int64)
    for j, name in enumerate(JOURNEYS):
        rows = np.flatnonzero(pur.journey == j)
        slot, event, known, with_item = (np.array(col) for col in zip(*TEMPLATES[name]))
        steps = len(slot)
        r, t = np.repeat(rows, steps), np.tile(np.arange(steps), len(rows))
        position = np.arange(steps) - np.searchsorted(slot, slot)
        offset = np.where(slot == 1, position - position[slot == 1].max(), position) * STEP_NS
        ts = np.where(slot[t] == 1, pur.ts[r], t0[r]) + offset[t]
        device = pur.devices[r, slot[t]]
        is_buy = event[t] == "purchase"
        buf.add(
            len(r),
            ts=ts,
            event=np.array([EV[e] for e in event])[t],
            customer=np.where(known[t] == 1, pur.customer[r], -1),
            anon=np.where(device >= 0, pur.customer[r] * 4 + device, -1),
            session=session_base + 2 * r + slot[t],
            channel=pur.channels[r, slot[t]],
            item=np.where(with_item[t] == 1, pur.item[r], -1),
            category=np.where((with_item[t] == 1) | (event[t] == "search"), pur.category[r], -1),
            amount=np.where(is_buy, pur.amount[r], np.nan),
            quantity=np.where(is_buy, pur.quantity[r], np.nan),
            offer=np.where(is_buy, pur.offer[r], -1),
        )
    return 2 * len(pur.ts)


def emit_returns(rng: np.random.Generator, buf: EventBuffer, pur: Purchases) -> None:
    """Some purchases come back 2 to 30 days later, in store or online."""
    rows = np.flatnonzero(rng.random(len(pur.ts)) < RETURN_RATE[pur.category])
    in_store = pur.channels[rows, 1] == CH["store"]
    buf.add(
        len(rows),
        ts=pur.ts[rows] + (rng.uniform(2, 30, len(rows)) * DAY_NS).astype(np.int64),
        event=EV["return"],
        customer=pur.customer[rows],
        channel=np.where(in_store, CH["store"], CH["web"]),
        anon=np.where(in_store, pur.customer[rows] * 4 + 3, -1),
        item=pur.item[rows],
        category=pur.category[rows],
        amount=pur.amount[rows],
        quantity=pur.quantity[rows],
    )
