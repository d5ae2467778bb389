"""Browsing sessions on phones, laptops and tablets: anonymous until the visitor logs in."""

from __future__ import annotations

import numpy as np

from nbo.units import DAY_NS
from simulator.catalog import Catalog
from simulator.events import CH, EV, EventBuffer, draw_times_of_day
from simulator.population import Population

SESSIONS_PER_PURCHASE = 3.0
BASE_SESSIONS = 0.01  # daily visits of anyone alive, buyer or not
STEP_NS = 40 * 10**9


def emit_browsing(
    rng: np.random.Generator,
    buf: EventBuffer,
    pop: Population,
    cat: Catalog,
    customers: np.ndarray,
    base: np.ndarray,
    offer_cd: np.ndarray,
    start_ns: int,
    session_base: int,
) -> int:
    """Sessions of page views, searches, product views and carts; returns how many sessions."""
    alive = base > 0
    count = rng.poisson(base * SESSIONS_PER_PURCHASE + BASE_SESSIONS * alive)
    row, day = np.nonzero(count)
    row, day = np.repeat(row, count[row, day]), np.repeat(day, count[row, day])
    c, n = customers[row], len(row)
    phone = pop.devices[c, 0] & (~pop.devices[c, 1] | (rng.random(n) < pop.app_share[c]))
    device = np.where(phone, 0, np.where(pop.devices[c, 2] & (rng.random(n) < 0.3), 2, 1))
    channel = np.where(phone, CH["app"], CH["web"])
    login = rng.random(n) < np.where(phone, 0.6, pop.login_rate[c])
    length = 2 + rng.poisson(2.5, n)
    cart = rng.random(n) < 0.25
    removed = cart & (length >= 4) & (rng.random(n) < 0.3)
    cum = np.cumsum(pop.affinity[c], axis=1)
    k = np.minimum((rng.random(n)[:, None] > cum).sum(axis=1), cum.shape[1] - 1)
    cart_item = cat.sample_items(rng, k, day)
    start = start_ns + day * DAY_NS + draw_times_of_day(rng, n)

    s = np.repeat(np.arange(n), length)
    first = np.cumsum(length) - length
    pos = np.arange(len(s)) - first[s]
    last = pos == length[s] - 1
    event = np.where(rng.random(len(s)) < 0.75, EV["product_view"], EV["search"])
    event = np.where(pos == 0, EV["page_view"], event)
    event = np.where(cart[s] & last & ~removed[s], EV["add_to_cart"], event)
    event = np.where(removed[s] & (pos == length[s] - 2), EV["add_to_cart"], event)
    event = np.where(removed[s] & last, EV["remove_from_cart"], event)
    event = np.where((pos == 1) & login[s], EV["login"], event)
    viewed = event == EV["product_view"]
    item = np.full(len(s), -1)
    item[viewed] = cat.sample_items(rng, k[s[viewed]], day[s[viewed]])
    carted = (event == EV["add_to_cart"]) | (event == EV["remove_from_cart"])
    item[carted] = cart_item[s[carted]]
    with_category = viewed | carted | (event == EV["search"])
    buf.add(
        len(s),
        ts=start[s] + pos * STEP_NS,
        event=event,
        channel=channel[s],
        customer=np.where(login[s] & (pos >= 1), c[s], -1),
        anon=c[s] * 4 + device[s],
        session=session_base + s,
        item=item,
        category=np.where(with_category, k[s], -1),
    )
    _emit_reminders(rng, buf, c, start, login, offer_cd[row, day], device, channel, session_base, cat)
    return n


def _emit_reminders(
    rng: np.random.Generator,
    buf: EventBuffer,
    c: np.ndarray,
    start: np.ndarray,
    login: np.ndarray,
    offer: np.ndarray,
    device: np.ndarray,
    channel: np.ndarray,
    session_base: int,
    cat: Catalog,
) -> None:
    """Logged-in visitors with an offer in force see it on site and sometimes click it."""
    shown = np.flatnonzero(login & (offer >= 0))
    clicked = shown[rng.random(len(shown)) < 0.15]
    for rows, event, delay in ((shown, "offer_shown", 50), (clicked, "offer_click", 70)):
        buf.add(
            len(rows),
            ts=start[rows] + delay * 10**9,
            event=EV[event],
            channel=channel[rows],
            customer=c[rows],
            anon=c[rows] * 4 + device[rows],
            session=session_base + rows,
            offer=offer[rows],
            category=cat.offer_category[offer[rows]],
        )
