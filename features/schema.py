"""Canonical tables (events, customers, items, offers) declared as data, and their validation.

Validation never drops a row silently: every row ends up either in the accepted frame or in the
quarantine frame with the source, the 1-based row number, the field and the reason.
"""

from __future__ import annotations

import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

CHANNELS = ("web", "app", "email", "store", "call_center", "sms")
EVENT_TYPES = (
    "page_view",
    "product_view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "email_sent",
    "email_open",
    "email_click",
    "offer_shown",
    "offer_click",
    "purchase",
    "return",
    "login",
    "opt_out",  # opt_out: no more offers to this customer, on any channel
)
Kind = Literal["string", "timestamp", "float", "int", "bool"]
QUARANTINE_COLUMNS = ["source", "row", "field", "reason"]
FUTURE_TOLERANCE = pd.Timedelta(minutes=5)
EARLIEST = pd.Timestamp("1990-01-01", tz="UTC")  # older events are a typo or a placeholder, not behaviour
MAX_AMOUNT = 10_000_000.0  # one purchase or return; more is a unit or parsing error
MAX_QUANTITY = 1_000_000.0
# ASCII digits only (full-width digits would otherwise parse), a date, then optionally a time and a zone.
ISO_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?"
    r"(?: ?(?:Z|UTC|[+-]\d{2}(?::?\d{2})?))?",
    re.ASCII,
)
CONTROL_CHARACTERS = r"[\x00-\x1f\x7f]"


@dataclass(frozen=True)
class Column:
    """One column of a canonical table."""

    name: str
    kind: Kind
    description: str
    required: bool = False
    allowed: tuple[str, ...] | None = None
    min_value: float | None = None
    max_value: float | None = None


@dataclass(frozen=True)
class TableSchema:
    """A canonical table: its key and its columns."""

    name: str
    key: str
    columns: tuple[Column, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


EVENTS = TableSchema(
    "events",
    "event_id",
    (
        Column("event_id", "string", "Unique event id; derived from the row's content when absent."),
        Column("ts", "timestamp", "When it happened (UTC).", required=True),
        Column("customer_id", "string", "Known customer; empty for anonymous events."),
        Column("anonymous_id", "string", "Device or cookie id."),
        Column("session_id", "string", "Browsing or visit session."),
        Column("channel", "string", "Where it happened.", required=True, allowed=CHANNELS),
        Column("event_type", "string", "What happened.", required=True, allowed=EVENT_TYPES),
        Column("item_id", "string", "Product concerned, if any."),
        Column("category", "string", "Product category concerned, if any."),
        Column("amount", "float", "Money amount (purchase or return value).", min_value=0.0, max_value=MAX_AMOUNT),
        Column("quantity", "float", "Number of units.", min_value=0.0, max_value=MAX_QUANTITY),
        Column("offer_id", "string", "Offer concerned (offer_shown, offer_click, purchase with offer)."),
        Column("campaign_id", "string", "Campaign concerned (e-mail events)."),
        Column("decision_id", "string", "The /recommend decision that showed the offer (offer events, purchases)."),
    ),
)

CUSTOMERS = TableSchema(
    "customers",
    "customer_id",
    (
        Column("customer_id", "string", "Customer id.", required=True),
        Column("signup_ts", "timestamp", "When the customer registered."),
        Column("email_opt_in", "bool", "May receive e-mail offers."),
        Column("sms_opt_in", "bool", "May receive SMS offers."),
    ),
)

ITEMS = TableSchema(
    "items",
    "item_id",
    (
        Column("item_id", "string", "Product id.", required=True),
        Column("category", "string", "Product category.", required=True),
        Column("price", "float", "List price (optional: sources without prices have none).", min_value=0.0),
        Column("margin", "float", "Gross margin per unit.", min_value=0.0),
    ),
)

OFFERS = TableSchema(
    "offers",
    "offer_id",
    (
        Column("offer_id", "string", "Offer id.", required=True),
        Column("category", "string", "Category the offer promotes.", required=True),
        Column("item_ids", "string", "Items the offer applies to, '|'-separated; empty = whole category."),
        Column("discount", "float", "Discount as a fraction of the price (0.1 = 10%).", min_value=0.0),
        Column(
            "value", "float", "Expected margin of one conversion, after the discount.", required=True, min_value=0.0
        ),
        Column("channels", "string", "Channels it may be shown in, '|'-separated.", required=True),
        Column("valid_from", "timestamp", "First moment the offer is valid (UTC)."),
        Column("valid_to", "timestamp", "Last moment the offer is valid (UTC)."),
    ),
)


def _coerce(series: pd.Series, column: Column) -> tuple[pd.Series, pd.Series]:
    """Convert one column to its kind; return the values and a mask of present-but-unparsable cells."""
    if column.kind in ("string", "float", "int") and series.isna().all():  # not sent: nothing to parse
        empty = pd.Series(
            np.nan if column.kind != "string" else pd.NA,
            index=series.index,
            dtype="string" if column.kind == "string" else "float64",
        )
        return empty, pd.Series(False, index=series.index)
    text = series.astype("string").str.strip()
    present = series.notna() & (text != "")
    if column.kind == "timestamp":
        values = pd.to_datetime(_iso_text(series), utc=True, errors="coerce", format="mixed")
    elif column.kind in ("float", "int"):
        values = pd.to_numeric(series, errors="coerce").astype("float64")
    elif column.kind == "bool":
        text = series.astype("string").str.strip().str.lower()
        values = text.map(
            {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False, "1.0": True, "0.0": False}
        ).astype("boolean")
    else:
        values = text.mask(~present)
    bad = present & values.isna()
    return values, bad


def _iso_text(series: pd.Series) -> pd.Series:
    """Timestamps as they came, except text that is not ASCII ISO 8601 (blanked, so it counts as unparsable)."""
    if isinstance(series.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(series):
        return series
    text = series.astype("string").str.strip()
    return series.where(text.str.fullmatch(ISO_TIME).fillna(False).astype(bool))


def _flag(reasons: pd.DataFrame, mask: pd.Series, field: str, reason: str) -> None:
    """Record the first failing field and reason for the rows in mask."""
    fresh = np.asarray(mask, dtype=bool) & reasons["field"].isna().to_numpy()
    if fresh.any():  # most checks flag nothing: skip the costly assignment (a third of a small batch's time)
        reasons.loc[fresh, ["field", "reason"]] = [field, reason]


def validate_table(raw: pd.DataFrame, schema: TableSchema, source: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split raw rows into (accepted rows in canonical types, quarantined rows with their reason)."""
    missing = [c.name for c in schema.columns if c.required and c.name not in raw.columns]
    if missing:
        raise ValueError(
            f"{source}: missing required column(s) {', '.join(missing)} for table "
            f"'{schema.name}' (expected columns: {', '.join(schema.names)})"
        )
    raw = raw.reset_index(drop=True)
    reasons = pd.DataFrame(
        {"field": pd.Series([None] * len(raw), dtype="object"), "reason": pd.Series([None] * len(raw), dtype="object")}
    )
    out = {}
    for column in schema.columns:
        series = raw[column.name] if column.name in raw.columns else pd.Series([None] * len(raw))
        values, bad = _coerce(series, column)
        _flag(reasons, bad, column.name, f"not a valid {column.kind}: {series[bad].head(1).tolist()}")
        if column.kind == "string":
            _flag(
                reasons,
                values.str.contains(CONTROL_CHARACTERS).fillna(False).astype(bool),
                column.name,
                f"{column.name} contains a control character",
            )
        if column.kind == "float":
            _flag(
                reasons, pd.Series(np.isinf(values.to_numpy())), column.name, f"{column.name} must be a finite number"
            )
        if column.required:
            _flag(reasons, values.isna(), column.name, "required value is missing")
        if column.allowed is not None:
            unknown = values.notna() & ~values.isin(column.allowed)
            _flag(reasons, unknown, column.name, f"unknown value (allowed: {', '.join(column.allowed)})")
        if column.min_value is not None:
            _flag(reasons, values < column.min_value, column.name, f"must be >= {column.min_value:g}")
        if column.max_value is not None:
            _flag(reasons, values > column.max_value, column.name, f"must be <= {column.max_value:g}")
        out[column.name] = values
    table = pd.DataFrame(out)
    if schema.key in raw.columns:
        _flag(reasons, table[schema.key].notna() & table[schema.key].duplicated(), schema.key, "duplicate key")
    return _split(raw, table, reasons, source)


def _split(
    raw: pd.DataFrame, table: pd.DataFrame, reasons: pd.DataFrame, source: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    bad = reasons["field"].notna().to_numpy()
    quarantine = raw.loc[bad].astype("string").copy()
    quarantine.insert(0, "reason", reasons.loc[bad, "reason"].to_numpy())
    quarantine.insert(0, "field", reasons.loc[bad, "field"].to_numpy())
    quarantine.insert(0, "row", np.flatnonzero(bad) + 1)
    quarantine.insert(0, "source", source)
    return table.loc[~bad].reset_index(drop=True), quarantine.reset_index(drop=True)


def derive_event_ids(events: pd.DataFrame) -> pd.Series:
    """A deterministic id from the event's content, so a replayed row gets the same id."""
    content = events.reindex(columns=[c for c in EVENTS.names if c != "event_id"])
    content = content.astype("string").fillna("")
    return "e" + pd.Series(pd.util.hash_pandas_object(content, index=False).to_numpy(), index=events.index).map(
        "{:016x}".format
    )


def validate_events(
    raw: pd.DataFrame,
    source: str,
    now: pd.Timestamp | None = None,
    known_offers: AbstractSet[str] | None = None,
    known_decisions: AbstractSet[str] | None = None,
    known_categories: AbstractSet[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate events: canonical types, an identity on every row, a time between EARLIEST and now, unique ids,
    and, where the known values are given, offers, decisions and categories that exist."""
    raw = raw.reset_index(drop=True).copy()
    if "event_id" not in raw.columns:
        raw["event_id"] = None
    if raw["event_id"].isna().any():
        ids = derive_event_ids(raw)
        raw["event_id"] = raw["event_id"].astype("object").where(raw["event_id"].notna(), ids)
    events, quarantine = validate_table(raw, EVENTS, source)
    now = now or pd.Timestamp.now(tz="UTC")
    reasons = pd.DataFrame({"field": [None] * len(events), "reason": [None] * len(events)}, dtype="object")
    _flag(
        reasons,
        events["customer_id"].isna() & events["anonymous_id"].isna(),
        "customer_id",
        "neither customer_id nor anonymous_id is set",
    )
    _flag(reasons, events["ts"] > now + FUTURE_TOLERANCE, "ts", "timestamp is in the future")
    _flag(reasons, events["ts"] < EARLIEST, "ts", f"timestamp before {EARLIEST:%Y-%m-%d}")
    _flag(
        reasons, (events["event_type"] == "purchase") & events["amount"].isna(), "amount", "a purchase needs an amount"
    )
    if known_offers is not None:
        _flag(reasons, events["offer_id"].notna() & ~events["offer_id"].isin(known_offers), "offer_id", "unknown offer")
    if known_decisions is not None:
        _flag(
            reasons,
            events["decision_id"].notna() & ~events["decision_id"].isin(known_decisions),
            "decision_id",
            "unknown decision (not served by /recommend)",
        )
    if known_categories is not None:
        _flag(
            reasons,
            events["category"].notna() & ~events["category"].isin(known_categories),
            "category",
            "unknown category (in no item or offer)",
        )
    rows = np.setdiff1d(np.arange(len(raw)), quarantine["row"].to_numpy() - 1)
    accepted, more = _split(raw.loc[rows].reset_index(drop=True), events, reasons, source)
    more["row"] = rows[more["row"].to_numpy() - 1] + 1
    return accepted, pd.concat([quarantine, more], ignore_index=True).sort_values("row", ignore_index=True)
