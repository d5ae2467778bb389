"""Business rules and arbitration, as plain functions over the offer catalogue indexed as arrays."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nbo.settings import default_of, read_setting
from nbo.units import DAY_SECONDS

OFFER_COLUMNS = ("offer_id", "category", "value", "channels", "valid_from", "valid_to")
CONTROL_SALT = default_of("control_salt")  # the default salt of the control group's hash ($NBO_CONTROL_SALT)
CONTROL_POLICIES = ("none", "popularity")  # what the control group gets instead of personalised offers


@dataclass(frozen=True)
class Policy:
    """The levers a marketer sets: exclusions, contact caps and exploration."""

    recent_purchase_days: int = 14
    email_offers_per_week: int = 1
    impressions_per_offer_per_day: int = 3
    epsilon: float = 0.1


@dataclass(frozen=True)
class ControlGroup:
    """The global control group: a stable share of customers, drawn by a salted hash of their id, who get no
    personalised offer on any channel but the baseline ``policy`` instead: "none" (no offer at all: treatment
    against control then measures the whole programme) or "popularity" (the popularity ranking: it measures
    what personalisation adds to it)."""

    share: float = 0.05
    salt: str = CONTROL_SALT
    policy: str = "none"

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"the control group's share must lie between 0 and 1, not {self.share}")
        if self.policy not in CONTROL_POLICIES:
            raise ValueError(
                f"the control group's policy must be one of {', '.join(CONTROL_POLICIES)}, not {self.policy!r}"
            )


def control_group_from_env(environ: Mapping[str, str] = os.environ) -> ControlGroup:
    """The control group of $NBO_CONTROL_SHARE (default 0.05), $NBO_CONTROL_SALT (default CONTROL_SALT) and
    $NBO_CONTROL_POLICY (none or popularity; default none)."""
    return ControlGroup(*(read_setting(f"control_{name}", environ) for name in ("share", "salt", "policy")))


def control_draw(customer_id: str, salt: str) -> float:
    """A customer's stable uniform draw in [0, 1): the first 8 bytes of SHA-256 of the salt and the id."""
    digest = hashlib.sha256(f"{salt}\x00{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def in_control(customer_id: str, control: ControlGroup) -> bool:
    """Whether a customer belongs to the control group (the same answer in every process and run)."""
    return control.share > 0 and control_draw(customer_id, control.salt) < control.share


def control_mask(customer_ids: Iterable[str], control: ControlGroup) -> np.ndarray:
    """in_control for each id, as a boolean array."""
    return np.fromiter((in_control(str(c), control) for c in customer_ids), dtype=bool)


@dataclass(frozen=True)
class Catalogue:
    """The offers as arrays, indexed once when they load: what every request's rules read."""

    offer_ids: np.ndarray  # object
    category_names: list[str]  # sorted
    category_codes: np.ndarray  # int, position in category_names
    values: np.ndarray  # float64, the offer's value
    valid_from: np.ndarray  # float64 epoch seconds, -inf when open
    valid_to: np.ndarray  # float64 epoch seconds, +inf when open
    channels: dict[str, np.ndarray]  # channel -> bool mask of the offers allowed in it
    name_order: np.ndarray  # int, rank of each offer_id in sorted order (ties broken by name)


def _epoch_seconds(times: pd.Series, missing: float) -> np.ndarray:
    """Timestamps as float epoch seconds; NaT becomes `missing`."""
    seconds = (pd.to_datetime(times, utc=True) - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(1, "s")
    return seconds.fillna(missing).to_numpy(dtype="float64")


def index_offers(offers: pd.DataFrame) -> Catalogue:
    """Index an offer catalogue for the request path; a catalogue the rules cannot read is refused."""
    missing = [c for c in OFFER_COLUMNS if c not in offers.columns]
    if missing:
        raise ValueError(f"the offer catalogue lacks the columns {', '.join(missing)}")
    for column in ("offer_id", "category", "value", "channels"):
        if offers[column].isna().any():
            bad = offers.loc[offers[column].isna(), "offer_id"].tolist()
            raise ValueError(f"offers without {column}: {bad[:5]}")
    if offers["offer_id"].duplicated().any():
        raise ValueError(f"duplicate offer ids: {offers.loc[offers['offer_id'].duplicated(), 'offer_id'].tolist()[:5]}")
    values = offers["value"].to_numpy(dtype="float64")
    if not np.isfinite(values).all():
        raise ValueError(f"offers with a non-finite value: {offers.loc[~np.isfinite(values), 'offer_id'].tolist()[:5]}")
    offer_ids = offers["offer_id"].to_numpy(dtype=object)
    names, codes = np.unique(offers["category"].to_numpy(dtype=object), return_inverse=True)
    allowed = [set(c.split("|")) for c in offers["channels"].tolist()]
    return Catalogue(
        offer_ids=offer_ids,
        category_names=[str(n) for n in names],
        category_codes=codes.astype("int64"),
        values=values,
        valid_from=_epoch_seconds(offers["valid_from"], -np.inf),
        valid_to=_epoch_seconds(offers["valid_to"], np.inf),
        channels={ch: np.array([ch in a for a in allowed], dtype=bool) for ch in set().union(*allowed)},
        name_order=np.argsort(np.argsort(offer_ids.astype(str), kind="stable"), kind="stable"),
    )


def eligible_offers(catalogue: Catalogue, channel: str, now: float) -> np.ndarray:
    """Positions of the offers valid at `now` (epoch seconds) and allowed in this channel."""
    in_channel = catalogue.channels.get(channel)
    if in_channel is None:
        return np.empty(0, dtype="int64")
    return np.flatnonzero(in_channel & (catalogue.valid_from <= now) & (catalogue.valid_to >= now))


def cap_window(channel: str) -> int:
    """How far back (seconds) the caps of a channel look: a week for e-mail, a day elsewhere."""
    return 7 * DAY_SECONDS if channel == "email" else DAY_SECONDS


def capped_offers(contacts: list[tuple[str, str, int]], channel: str, now: int, policy: Policy) -> set[str] | None:
    """Offers the caps forbid now, from the customer's recent contacts (offer_id, channel, ts); None when the
    channel itself is capped (no offer at all)."""
    if (
        channel == "email"
        and sum(c == "email" and ts >= now - cap_window("email") for _, c, ts in contacts)
        >= policy.email_offers_per_week
    ):
        return None
    today = Counter(offer for offer, _, ts in contacts if ts >= now - DAY_SECONDS)
    return {offer for offer, n in today.items() if n >= policy.impressions_per_offer_per_day}


def within_caps(
    contacts: list[tuple[str, str, int]], channel: str, now: int, offers: list[str], policy: Policy
) -> bool:
    """Whether a decision showing these offers in the channel now keeps every cap, given the customer's recent
    contacts (a decision showing nothing still counts as a contact of the channel)."""
    capped = capped_offers(contacts, channel, now, policy)
    return capped is not None and not capped.intersection(offers)


def rank_offers(
    category_codes: np.ndarray,
    values: np.ndarray,
    name_order: np.ndarray,
    probability: np.ndarray,
    excluded: np.ndarray,
) -> np.ndarray:
    """Positions of the best offer of each allowed category, best first, by expected value (probability x
    value; ties go to the smaller offer id). `excluded` marks offers whose category is ruled out."""
    allowed = np.flatnonzero(~excluded)
    expected = probability[allowed] * values[allowed]
    order = allowed[np.lexsort((name_order[allowed], -expected))]
    _, first = np.unique(category_codes[order], return_index=True)
    return order[np.sort(first)]


@dataclass(frozen=True)
class Slots:
    """Which ranked offers fill the slots, with the probability each had of being picked."""

    picks: list[int]
    propensity: list[float]
    explored: list[bool]
    intended: list[int]  # the pick the greedy policy would have made in each slot (the pick itself unless explored)


def choose_slots(n: int, k: int, epsilon: float, rng: np.random.Generator, top: int | None = None) -> Slots:
    """Fill k slots from n ranked offers epsilon-greedily: the best remaining one, or with probability
    epsilon one drawn at random (among the best `top` remaining when given: no pick's propensity falls below
    epsilon / top); each pick carries its propensity and the best remaining one it replaced."""
    remaining = list(range(n))
    picks, propensities, explored, intended = [], [], [], []
    for _ in range(min(k, n)):
        size = min(len(remaining), top or len(remaining))
        exploring = rng.random() < epsilon
        position = int(rng.integers(size)) if exploring else 0
        intended.append(remaining[0])
        picks.append(remaining.pop(position))
        propensities.append((1 - epsilon) * (position == 0) + epsilon / size)
        explored.append(exploring and position != 0)
    return Slots(picks, propensities, explored, intended)


def recently_bought(days_since_purchase: np.ndarray, within_days: int) -> np.ndarray:
    """Whether the customer bought within the last within_days days (NaN: never), element-wise."""
    with np.errstate(invalid="ignore"):
        return days_since_purchase < within_days
