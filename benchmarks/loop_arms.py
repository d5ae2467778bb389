"""The closed-loop benchmark's arms: who picks the offer each customer is shown.

The loop asks the real service over HTTP and posts it every event; the frozen arm runs the day-0 champion
in-process on a store of its own (fed its own events); popularity, random and the oracle need no events. Every
arm leaves the global control group without offers. `decide` answers, per customer, an offer position in
market.offer_ids (NO_OFFER: none) and the decision id to send back on the events.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import aiohttp
import numpy as np
import pandas as pd

from benchmarks.loop_world import DayPlan, EventLog, World
from features.online import OnlineStore
from features.schema import EVENTS, validate_events
from serving.clock import set_clock
from serving.decisions import DecisionLog
from serving.recommender import Recommender
from serving.rules import Catalogue, eligible_offers
from simulator.response import NO_OFFER, best_offers, typical_response_offers
from training.registry import LoadedModel

CONCURRENCY = 8  # requests in flight from the site to the service


def eligible_positions(world: World, catalogue: Catalogue, channel: str, at: pd.Timestamp) -> np.ndarray:
    """Positions in market.offer_ids of the offers valid at `at` in the channel."""
    position = {o: i for i, o in enumerate(world.market.offer_ids)}
    return np.array(
        [position[o] for o in catalogue.offer_ids[eligible_offers(catalogue, channel, at.timestamp())]], dtype=np.int64
    )


def positions_of(world: World, offer_ids: list[str | None]) -> np.ndarray:
    position = {o: i for i, o in enumerate(world.market.offer_ids)}
    return np.array([position[o] if o is not None else NO_OFFER for o in offer_ids], dtype=np.int64)


class LoopArm:
    """The real service: decisions from /recommend, every event to /events, the clock file set to the phase."""

    name = "loop"
    posts_events = True

    def __init__(self, url: str, key: str, clock: Path):
        self.url, self.headers, self.clock = url, {"x-api-key": key}, clock
        self.posted = 0

    def decide(
        self,
        world: World,
        plan: DayPlan,
        channel: str,
        customers: np.ndarray,
        on_screen: list[str | None],
        at: pd.Timestamp,
    ) -> tuple[np.ndarray, np.ndarray]:
        set_clock(self.clock, at)
        bodies = [
            {
                "customer_id": world.market.customer_ids[c],
                "channel": channel,
                "k": 1,
                **({"context": {"current_category": s}} if s else {}),
            }
            for c, s in zip(customers, on_screen)
        ]
        answers = asyncio.run(self._post_all("/recommend", bodies))
        offers = [a["offers"][0]["offer_id"] if a["offers"] else None for a in answers]
        return positions_of(world, offers), np.array([a["decision_id"] for a in answers], dtype=object)

    def observe(self, log: EventLog) -> None:
        answers = asyncio.run(self._post_all("/events", log.batches(), concurrency=2))
        for body, answer in zip(log.batches(), answers):
            if answer["rejected"] or answer["accepted"] + answer["duplicates"] != len(body["events"]):
                raise RuntimeError(f"/events did not take a batch whole: {answer}")
        self.posted += len(log.rows)

    async def _post_all(self, route: str, bodies: list[dict], concurrency: int = CONCURRENCY) -> list[dict]:
        gate = asyncio.Semaphore(concurrency)
        timeout = aiohttp.ClientTimeout(total=60)

        async def post(client: aiohttp.ClientSession, body: dict) -> dict:
            async with gate, client.post(self.url + route, json=body, headers=self.headers) as answer:
                if answer.status != 200:
                    raise RuntimeError(f"{route} answered {answer.status}: {(await answer.text())[:300]}")
                return await answer.json()

        async with aiohttp.ClientSession(timeout=timeout) as client:
            return await asyncio.gather(*(post(client, b) for b in bodies))


class FrozenArm:
    """The day-0 champion, never retrained, deciding in-process on its own copy of the day-0 online store."""

    name = "frozen"
    posts_events = True

    def __init__(self, model: LoadedModel, store_file: Path, offers: pd.DataFrame, items: pd.DataFrame, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(store_file, folder / "store.sqlite")
        self.store = OnlineStore(folder / "store.sqlite")
        self.recommender = Recommender(
            model, self.store, offers, items, DecisionLog(folder / "decisions.sqlite"), seed=0
        )

    def decide(
        self,
        world: World,
        plan: DayPlan,
        channel: str,
        customers: np.ndarray,
        on_screen: list[str | None],
        at: pd.Timestamp,
    ) -> tuple[np.ndarray, np.ndarray]:
        decisions = [
            self.recommender.recommend(world.market.customer_ids[c], channel, 1, s, now=at)
            for c, s in zip(customers, on_screen)
        ]
        offers = [d.offers[0].offer_id if d.offers else None for d in decisions]
        return positions_of(world, offers), np.array([d.decision_id for d in decisions], dtype=object)

    def observe(self, log: EventLog) -> None:
        events, quarantine = validate_events(log.frame().reindex(columns=EVENTS.names), "frozen")
        if len(quarantine):
            raise RuntimeError(f"the frozen arm's events were refused: {quarantine.head().to_dict('records')}")
        self.store.apply(events)

    def close(self) -> None:
        self.recommender.log.close()
        self.store.close()


class RuleArm:
    """Offers without a model: popularity (the champion's category shares at day 0), random, the oracle, or the
    typical-response reference (true purchase rates, the population's mean answer to offers)."""

    posts_events = False

    def __init__(self, name: str, catalogue: Catalogue, popularity: dict[str, float] | None = None):
        self.name, self.catalogue, self.popularity = name, catalogue, popularity or {}

    def decide(
        self,
        world: World,
        plan: DayPlan,
        channel: str,
        customers: np.ndarray,
        on_screen: list[str | None],
        at: pd.Timestamp,
    ) -> tuple[np.ndarray, np.ndarray]:
        allowed = eligible_positions(world, self.catalogue, channel, at)
        treated = customers[~world.control[customers]]
        offers = np.full(len(customers), NO_OFFER)
        if len(allowed) and len(treated):
            offers[~world.control[customers]] = self._pick(world, plan, channel, treated, allowed)
        return offers, np.full(len(customers), None, dtype=object)

    def _pick(
        self, world: World, plan: DayPlan, channel: str, customers: np.ndarray, allowed: np.ndarray
    ) -> np.ndarray:
        if self.name == "oracle":
            return best_offers(world.market, plan.rates, customers, allowed)
        if self.name == "typical_response":
            return typical_response_offers(world.market, plan.rates, customers, allowed)
        if self.name == "random":
            rng = np.random.default_rng([world.seed, 9, plan.day, len(channel)])
            return rng.choice(allowed, len(customers))
        shares = [self.popularity.get(world.categories[world.market.offer_category[o]], 0.0) for o in allowed]
        return np.full(len(customers), allowed[int(np.argmax(shares))])

    def observe(self, log: EventLog) -> None:
        raise TypeError("rule arms take no events")
