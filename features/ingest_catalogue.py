"""Items, offers and customers derived from the events, for a home that was given events alone.

``nbo features`` writes each table the home lacks as ``raw/{table}.parquet``, marked as derived in the file's
metadata (``DERIVED_KEY``), and writes it again from all the events at each build; a table the retailer supplied
(``nbo ingest --table``, or the simulator's) is never touched, and replaces the derived one.

* items: every item the events name; its category is the latest one its events carry (``UNCATEGORISED`` when
  none does); its price the median unit price of its purchases with a known amount (empty otherwise).
* offers: one per category, ``category:NAME``, shown on every channel, always valid; its value is the median
  amount of the category's purchases (a revenue proxy: the margin is unknown), else that of all purchases, else 1.
* customers: the known customers of the events, without attributes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.publish import write_atomically
from features.schema import CHANNELS
from nbo.config import Paths

DERIVED_KEY = b"nbo.derived"
DERIVED_TABLES = ("items", "offers", "customers")
UNCATEGORISED = "uncategorised"
OFFER_PREFIX = "category:"


def is_derived(path: Path) -> bool:
    """Whether a table file was derived from the events (not supplied by the retailer)."""
    return DERIVED_KEY in (pq.read_schema(path).metadata or {})


def supplied_files(paths: Paths, table: str) -> list[Path]:
    """The files of a table the retailer supplied: raw/TABLE.parquet unless derived, and raw/TABLE/*.parquet."""
    single = paths.raw / f"{table}.parquet"
    files = [single] if single.exists() and not is_derived(single) else []
    return files + sorted((paths.raw / table).glob("*.parquet"))


def table_files(paths: Paths, table: str) -> list[Path]:
    """The files to read a table from: those supplied, else the derived one (none when neither exists)."""
    single = paths.raw / f"{table}.parquet"
    return supplied_files(paths, table) or [p for p in [single] if p.exists()]


def purchases_of(events: pd.DataFrame) -> pd.DataFrame:
    """Purchases with a known, positive amount (sources without prices record 0), with their unit price."""
    bought = events[(events["event_type"] == "purchase") & (events["amount"] > 0)]
    units = bought["quantity"].astype("float64").where(bought["quantity"] > 0, 1.0)
    return bought.assign(unit_price=bought["amount"].astype("float64") / units)


def derive_items(events: pd.DataFrame) -> pd.DataFrame:
    """One row per item the events name: its latest category (UNCATEGORISED when none) and median unit price."""
    named = events.loc[events["item_id"].notna(), ["item_id", "category", "ts"]]
    tagged = named[named["category"].notna()]
    last = tagged.loc[tagged.groupby("item_id", observed=True)["ts"].idxmax()]  # an item's latest tagged event
    latest = pd.Series(last["category"].astype(str).to_numpy(), index=last["item_id"].astype(str).to_numpy())
    ids = pd.Index(np.sort(named["item_id"].astype(str).unique()), name="item_id")
    prices = purchases_of(events).astype({"item_id": str}).groupby("item_id")["unit_price"].median()
    return pd.DataFrame(
        {"category": latest.reindex(ids).fillna(UNCATEGORISED), "price": prices.reindex(ids).astype("float64")}
    ).reset_index()


def with_item_categories(events: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Events that name an item but no category take the item's category from the catalogue (category codes
    are remapped, no text is written per event)."""
    missing = (events["category"].isna() & events["item_id"].notna()).to_numpy()
    if not missing.any():
        return events
    catalogue = items.drop_duplicates("item_id")
    current = events["category"].astype("category")
    given = catalogue["category"].astype(str)
    names = current.cat.categories.astype(str).union(pd.Index(given.unique()))
    remap = np.append(names.get_indexer(current.cat.categories.astype(str)), -1)  # code -1 (none) stays -1
    codes = remap[current.cat.codes.to_numpy()]
    item = pd.Index(catalogue["item_id"].astype(str)).get_indexer(events["item_id"][missing].astype(str))
    codes[missing] = np.append(names.get_indexer(given), -1)[item]  # item -1 (not in the catalogue): none
    return events.assign(category=pd.Categorical.from_codes(codes, names))


def derive_offers(events: pd.DataFrame, categories: list[str]) -> pd.DataFrame:
    """One offer per category, shown everywhere, valued at the median amount of the category's purchases."""
    bought = purchases_of(events).astype({"category": object})
    overall = float(bought["amount"].median()) if len(bought) else 1.0
    value = bought.groupby("category")["amount"].median().reindex(categories).fillna(overall)
    never = pd.Series(pd.NaT, index=range(len(categories)), dtype="datetime64[us, UTC]")
    return pd.DataFrame(
        {
            "offer_id": [OFFER_PREFIX + c for c in categories],
            "category": categories,
            "item_ids": pd.Series([None] * len(categories), dtype="string"),
            "discount": np.nan,
            "value": value.to_numpy(dtype="float64"),
            "channels": "|".join(CHANNELS),
            "valid_from": never,
            "valid_to": never,
        }
    )


def derive_customers(events: pd.DataFrame) -> pd.DataFrame:
    """The known customers of the events."""
    known = pd.Index(events["customer_id"].dropna().unique()).astype(str).unique()
    return pd.DataFrame({"customer_id": np.sort(known.to_numpy())})


def write_derived(path: Path, table: pd.DataFrame) -> None:
    """Write a derived table, marked as such, in one step."""
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), DERIVED_KEY: b"events"})
    write_atomically(path, lambda tmp: pq.write_table(arrow, tmp))


def read_table(files: list[Path], columns: list[str] | None = None) -> pd.DataFrame:
    """A table from its Parquet files (only ``columns`` when given)."""
    return pd.concat([pd.read_parquet(p, columns=columns) for p in files], ignore_index=True)


def complete_catalogue(paths: Paths, events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Items, events (categories filled from the items) and the categories to learn: each of items, offers and
    customers the retailer did not supply is derived from the events and written (see the module docstring)."""
    supplied = {table: supplied_files(paths, table) for table in DERIVED_TABLES}
    items = read_table(supplied["items"]) if supplied["items"] else derive_items(events)
    events = with_item_categories(events, items)
    named = events["category"].dropna().astype(str).unique().tolist()
    categories = sorted(set(items["category"].dropna().astype(str)) | set(named))
    if not supplied["items"]:
        write_derived(paths.raw / "items.parquet", items)
    if not supplied["offers"]:
        write_derived(paths.raw / "offers.parquet", derive_offers(events, categories))
    if not supplied["customers"]:
        write_derived(paths.raw / "customers.parquet", derive_customers(events))
    return items, events, categories
