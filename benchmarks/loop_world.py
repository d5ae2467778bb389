"""The closed-loop benchmark's world: the simulated retailer's customers, their days, and the events a site posts.

Everything a policy cannot change is drawn once per day from the day's own seed (who browses, what they look at, who
gets the week's e-mail, the luck of every purchase and click): each arm faces the same customers with the same luck,
and only the offers shown differ (simulator.response turns them into purchases and revenue).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from simulator.response import NO_OFFER, Market, category_rates

EMAIL_WEEKDAY_EVERY = 7  # the e-mail job runs on loop days 0, 7, 14, ...
BROWSE_BOOST = 4.0  # browsing sessions per expected purchase (and a floor of window shoppers)
BROWSE_FLOOR = 0.03
HOUR = pd.Timedelta(hours=1)


@dataclass(frozen=True)
class World:
    """What every arm shares: the market, the customers' attributes and the loop's calendar."""

    market: Market
    email_opt_in: np.ndarray  # (customers,) bool
    control: np.ndarray  # (customers,) bool: the global control group (no personalised offers)
    first_day: int  # the loop's day 0, counted from the truth's start
    start: pd.Timestamp  # midnight of the loop's day 0 (UTC)
    categories: list[str]
    seed: int

    def midnight(self, day: int) -> pd.Timestamp:
        return self.start + pd.Timedelta(days=day)


@dataclass(frozen=True)
class DayPlan:
    """One loop day, the same for every arm."""

    day: int
    rates: np.ndarray  # (customers, categories) without offers
    browsers: np.ndarray  # customers with a web session
    views: list[np.ndarray]  # per browser, the categories viewed in order (the last one is on screen)
    emailed: np.ndarray  # customers the e-mail job asks an offer for
    luck: np.ndarray  # (customers, categories) uniform: purchases
    price_noise: np.ndarray  # (customers, categories) lognormal, mean 1
    click_luck: np.ndarray  # (customers,) uniform: clicks on the day's shown offers


def plan_day(world: World, day: int) -> DayPlan:
    """Draw a day's browsing, e-mail list and luck from the day's seed."""
    rng = np.random.default_rng([world.seed, 7, day])
    rates = category_rates(world.market, world.first_day + day)
    n, k = rates.shape
    luck, noise, click = rng.random((n, k)), rng.lognormal(-0.045, 0.3, (n, k)), rng.random(n)
    alive = rates.sum(axis=1) > 0
    browse = alive & (rng.random(n) < -np.expm1(-(BROWSE_BOOST * rates.sum(axis=1) + BROWSE_FLOOR)))
    browsers = np.flatnonzero(browse)
    taste = np.cumsum(world.market.affinity[browsers], axis=1)
    counts = 1 + rng.poisson(1.5, len(browsers))
    views = [np.minimum((rng.random(m)[:, None] > row[None, :]).sum(axis=1), k - 1) for m, row in zip(counts, taste)]
    emailed = np.flatnonzero(world.email_opt_in & alive) if day % EMAIL_WEEKDAY_EVERY == 0 else np.array([], int)
    return DayPlan(day, rates, browsers, views, emailed, luck, noise, click)


@dataclass
class EventLog:
    """Canonical events of one arm and day, built as rows, read as a frame or as /events JSON bodies."""

    arm: str
    day: int
    part: str  # views, answers: the event ids' middle
    rows: list[dict] = field(default_factory=list)

    def add(self, ts: pd.Timestamp, customer_id: str, event_type: str, channel: str, **extra) -> None:
        self.rows.append(
            {
                "event_id": f"{self.arm}-{self.day}-{self.part}-{len(self.rows)}",
                "ts": ts.isoformat(),
                "customer_id": customer_id,
                "channel": channel,
                "event_type": event_type,
                **{key: value for key, value in extra.items() if value is not None},
            }
        )

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def batches(self, size: int = 1000) -> list[dict]:
        return [{"events": self.rows[i : i + size]} for i in range(0, len(self.rows), size)]


def add_views(log: EventLog, world: World, plan: DayPlan) -> None:
    """The day's web sessions before any offer: a page view, then product views by category (08:00 to noon)."""
    rng = np.random.default_rng([world.seed, 8, plan.day])
    ids, noon = world.market.customer_ids, world.midnight(plan.day) + 12 * HOUR
    for c, viewed in zip(plan.browsers, plan.views):
        at = world.midnight(plan.day) + 8 * HOUR + pd.Timedelta(seconds=int(rng.integers(0, 3 * 3600)))
        log.add(at, ids[c], "page_view", "web", session_id=f"s{plan.day}-{c}")
        for j, k in enumerate(viewed):
            log.add(
                min(at + pd.Timedelta(seconds=30 * (j + 1)), noon),
                ids[c],
                "product_view",
                "web",
                session_id=f"s{plan.day}-{c}",
                category=world.categories[k],
            )


def add_answers(
    log: EventLog,
    world: World,
    plan: DayPlan,
    shown: list[tuple[np.ndarray, np.ndarray, np.ndarray, str]],
    clicks: np.ndarray,
    purchases,
    decisions: np.ndarray,
) -> None:
    """What follows the offers: offer_shown (and offer_click) per shown offer, then the day's purchases, each with
    the decision of the offer in force in its category. `shown` holds (customers, offers, decision ids, channel)."""
    ids, offer_ids, noon = world.market.customer_ids, world.market.offer_ids, world.midnight(plan.day) + 12 * HOUR
    clicked = iter(clicks)
    for customers, offers, decision_ids, channel in shown:
        for c, o, d in zip(customers, offers, decision_ids):
            common = dict(
                offer_id=offer_ids[o], decision_id=d, category=world.categories[world.market.offer_category[o]]
            )
            log.add(noon + pd.Timedelta(seconds=1), ids[c], "offer_shown", channel, **common)
            if next(clicked):
                log.add(noon + pd.Timedelta(minutes=5), ids[c], "offer_click", channel, **common)
    browsed = set(plan.browsers.tolist())
    for n, (c, k, o, amount) in enumerate(
        zip(purchases.customer, purchases.category, purchases.offer, purchases.amount)
    ):
        at = noon + HOUR + pd.Timedelta(seconds=int(n % 36000))
        channel = "web" if c in browsed else "store"
        linked = dict(offer_id=offer_ids[o], decision_id=decisions[c, k]) if o != NO_OFFER else {}
        log.add(at, ids[c], "add_to_cart", channel, category=world.categories[k])
        log.add(
            at + pd.Timedelta(seconds=20),
            ids[c],
            "purchase",
            channel,
            category=world.categories[k],
            amount=round(float(amount), 2),
            quantity=1.0,
            **linked,
        )
