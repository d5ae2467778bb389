"""Weekly offer campaigns (randomised, logged propensities, control group), newsletters and their events."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nbo.units import DAY_NS
from simulator.calendar import HOUR_NS
from simulator.catalog import Catalog
from simulator.events import CH, EV, EventBuffer
from simulator.population import Population

OFFER_WEEKDAY = 1  # Tuesday
CONTROL_SHARE = 0.2
HORIZON_DAYS = 7
MINUTE_NS = 60 * 10**9


@dataclass
class Exposures:
    """One row per customer and weekly campaign; customer indices are global."""

    customer: np.ndarray
    day: np.ndarray
    ts: np.ndarray
    channel: np.ndarray
    offer: np.ndarray
    treated: np.ndarray
    propensity: np.ndarray
    multiplier: np.ndarray


def list_campaign_days(start_epoch_day: int, days: int) -> np.ndarray:
    """Day numbers of the weekly offer campaigns."""
    day = np.arange(days)
    return day[(start_epoch_day + day + 3) % 7 == OFFER_WEEKDAY]


def assign_offers(
    rng: np.random.Generator,
    pop: Population,
    cat: Catalog,
    customers: np.ndarray,
    start_epoch_day: int,
    start_ns: int,
    days: int,
) -> Exposures:
    """Pick an offer per reachable customer and campaign (half uniform, half by taste), hold out a control."""
    empty = np.zeros(0, dtype=np.int64)
    parts = [(empty, empty, empty, empty.astype(bool), empty.astype(float))]
    for d in list_campaign_days(start_epoch_day, days):
        reach = customers[(pop.email_opt_in[customers] | pop.sms_opt_in[customers]) & (pop.signup_day[customers] <= d)]
        offers = cat.offer_valid(d)
        taste = pop.affinity[reach][:, cat.offer_category[offers]]
        policy = 0.5 / len(offers) + 0.5 * taste / taste.sum(axis=1, keepdims=True)
        pick = (rng.random(len(reach))[:, None] > np.cumsum(policy, axis=1)).sum(axis=1)
        pick = np.minimum(pick, len(offers) - 1)
        treated = rng.random(len(reach)) >= CONTROL_SHARE
        chosen = policy[np.arange(len(reach)), pick]
        parts.append(
            (
                reach,
                np.full(len(reach), d),
                offers[pick],
                treated,
                np.where(treated, (1 - CONTROL_SHARE) * chosen, CONTROL_SHARE),
            )
        )
    customer, day, offer, treated, propensity = (np.concatenate([p[i] for p in parts]) for i in range(5))
    ts = start_ns + day * DAY_NS + 6 * HOUR_NS + rng.integers(0, 2 * HOUR_NS, len(day))
    channel = np.where(pop.email_opt_in[customer], CH["email"], CH["sms"])
    multiplier = pop.offer_multiplier(customer, cat.discount[offer])
    return Exposures(customer, day, ts, channel, offer, treated, propensity, multiplier)


def spread_offers(exp: Exposures, first: int, n: int, days: int) -> tuple[np.ndarray, np.ndarray]:
    """Per (customer - first, day): the offer in force (-1 none) and its rate multiplier."""
    offer = np.full((n, days), -1, dtype=np.int64)
    mult = np.ones((n, days))
    rows = np.flatnonzero(exp.treated)
    for h in range(HORIZON_DAYS):
        day = exp.day[rows] + h
        ok = day < days
        offer[exp.customer[rows[ok]] - first, day[ok]] = exp.offer[rows[ok]]
        mult[exp.customer[rows[ok]] - first, day[ok]] = exp.multiplier[rows[ok]]
    return offer, mult


def emit_exposure_events(
    rng: np.random.Generator,
    buf: EventBuffer,
    pop: Population,
    cat: Catalog,
    exp: Exposures,
    campaign_base: int,
    session_base: int,
) -> int:
    """E-mail or SMS events of treated exposures, with a landing session after e-mail clicks."""
    rows = np.flatnonzero(exp.treated)
    c, ts, offer, ch = exp.customer[rows], exp.ts[rows], exp.offer[rows], exp.channel[rows]
    k, campaign = cat.offer_category[offer], campaign_base + exp.day[rows]
    common = dict(customer=c, category=k, offer=offer, campaign=campaign)
    email = ch == CH["email"]
    opened = rng.random(len(rows)) < pop.open_rate[c]
    clicked = opened & (rng.random(len(rows)) < pop.click_rate[c])
    t_open = ts + rng.exponential(3 * HOUR_NS, len(rows)).astype(np.int64)
    t_click = t_open + rng.exponential(2 * MINUTE_NS, len(rows)).astype(np.int64)
    device = c * 4 + np.where(pop.devices[c, 0], 0, 1)
    for mask, event, when, channel in (
        (email, "email_sent", ts, CH["email"]),
        (email & opened, "email_open", t_open, CH["email"]),
        (~email, "offer_shown", ts, CH["sms"]),
        (~email & clicked, "offer_click", t_click, CH["sms"]),
    ):
        buf.add(
            int(mask.sum()),
            ts=when[mask],
            event=EV[event],
            channel=channel,
            **{key: value[mask] for key, value in common.items()},
        )
    land = np.flatnonzero(email & clicked)
    session = session_base + np.arange(len(land))
    buf.add(
        len(land),
        ts=t_click[land],
        event=EV["email_click"],
        channel=CH["email"],
        anon=device[land],
        **{key: value[land] for key, value in common.items()},
    )
    shown = t_click[land] + 20 * 10**9
    for step, event in enumerate(("page_view", "offer_shown")):
        buf.add(
            len(land),
            ts=shown + step * 10**9,
            event=EV[event],
            channel=CH["web"],
            anon=device[land],
            session=session,
            customer=c[land],
            offer=offer[land] if step else -1,
            category=k[land] if step else -1,
        )
    kept = rng.random(len(land)) < 0.5
    session, took = session[kept], land[kept]
    buf.add(
        len(took),
        ts=t_click[took] + 40 * 10**9,
        event=EV["offer_click"],
        channel=CH["web"],
        anon=device[took],
        session=session,
        customer=c[took],
        offer=offer[took],
        category=k[took],
    )
    return len(land)


def emit_newsletters(
    rng: np.random.Generator, buf: EventBuffer, pop: Population, customers: np.ndarray, start_ns: int, days: int
) -> None:
    """Category newsletters at each customer's assigned pressure, with opens and clicks."""
    n_cat = pop.affinity.shape[1]
    rate = np.where(pop.email_opt_in[customers], pop.newsletters[customers] / 7.0, 0.0)
    sent = (rng.random((len(customers), days)) < rate[:, None]) & (
        np.arange(days)[None, :] >= pop.signup_day[customers][:, None]
    )
    row, day = np.nonzero(sent)
    c = customers[row]
    taste = (rng.random(len(c))[:, None] > np.cumsum(pop.affinity[c], axis=1)).sum(axis=1)
    k = np.where(rng.random(len(c)) < 0.5, np.minimum(taste, n_cat - 1), rng.integers(0, n_cat, len(c)))
    ts = start_ns + day * DAY_NS + 10 * HOUR_NS + rng.integers(0, 2 * HOUR_NS, len(c))
    opened = rng.random(len(c)) < pop.open_rate[c]
    clicked = opened & (rng.random(len(c)) < pop.click_rate[c])
    t_open = ts + rng.exponential(3 * HOUR_NS, len(c)).astype(np.int64)
    campaign = day * n_cat + k
    for mask, event, when in ((np.ones(len(c), bool), "email_sent", ts), (opened, "email_open", t_open)):
        buf.add(
            int(mask.sum()),
            ts=when[mask],
            event=EV[event],
            channel=CH["email"],
            customer=c[mask],
            category=k[mask],
            campaign=campaign[mask],
        )
    device = c * 4 + np.where(pop.devices[c, 0], 0, 1)
    buf.add(
        int(clicked.sum()),
        ts=t_open[clicked] + 60 * 10**9,
        event=EV["email_click"],
        channel=CH["email"],
        customer=c[clicked],
        anon=device[clicked],
        category=k[clicked],
        campaign=campaign[clicked],
    )
