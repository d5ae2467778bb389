"""Ingest the tables beside the events: items, offers and customers, validated like events.

Formats: ``canonical`` for each table (the columns of features.schema, CSV, Parquet or JSON lines; other columns
are kept, as numbers when every cell is one: customer attributes, for instance), and ``retailrocket`` for items
(item_properties.csv: the latest ``categoryid`` of each item is its category; other properties are left).

One ingest reads one or more files (a table split in parts) and writes, only when every file was read and at least
one row accepted, both at once:

* ``raw/{table}.parquet``: the whole table, replacing the one supplied before or derived from the events;
* ``quarantine/{table}-{fmt}.csv``: each rejected row with ``source`` (``{fmt}:{file name}``), ``row`` (1-based
  data row of its file), ``field``, ``reason`` and its cells.

Rows read = accepted + quarantined + ignored (rows another property fills) + superseded (older versions).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.ingest_read import CHUNK_ROWS, check_columns, describe_rejection, read_chunks, summarize_reason
from features.schema import CHANNELS, CUSTOMERS, ITEMS, OFFERS, QUARANTINE_COLUMNS, TableSchema, validate_table
from nbo.config import Paths

SCHEMAS = {"items": ITEMS, "offers": OFFERS, "customers": CUSTOMERS}
AS_OF = "as_of"  # the version time of a row, in formats whose rows are dated versions


def adapt_canonical(raw: pd.DataFrame) -> pd.DataFrame:
    """Canonical rows as they are."""
    return raw


def adapt_retailrocket_items(raw: pd.DataFrame) -> pd.DataFrame:
    """RetailRocket item properties: the ``categoryid`` rows, as dated versions of an item's category."""
    rows = raw[raw["property"].str.strip() == "categoryid"]
    return pd.DataFrame({"item_id": rows["itemid"], "category": rows["value"], AS_OF: rows["timestamp"]})


@dataclass(frozen=True)
class TableFormat:
    """How to read a table in one format: its required source columns and its adapter (rows it leaves out are
    ignored); with ``AS_OF`` in its output, the latest version of each key is kept."""

    columns: tuple[str, ...]
    adapt: Callable[[pd.DataFrame], pd.DataFrame] = adapt_canonical


TABLE_FORMATS: dict[str, dict[str, TableFormat]] = {
    name: {"canonical": TableFormat(tuple(c.name for c in schema.columns if c.required))}
    for name, schema in SCHEMAS.items()
}
TABLE_FORMATS["items"]["retailrocket"] = TableFormat(
    ("timestamp", "itemid", "property", "value"), adapt_retailrocket_items
)


@dataclass
class TableReport:
    """What one table ingest did; rows_in == accepted + quarantined + ignored + superseded."""

    table: str
    fmt: str
    sources: list[Path]
    table_path: Path
    quarantine_path: Path
    rows_in: int = 0
    accepted: int = 0
    quarantined: int = 0
    ignored: int = 0
    superseded: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    first_rejected: str | None = None


def read_sources(report: TableReport, spec: TableFormat, encoding: str) -> pd.DataFrame:
    """The adapted rows of every file, with their ``source`` and 1-based ``row``."""
    parts = []
    for path in report.sources:
        offset = 0
        for chunk in read_chunks(path, ",", CHUNK_ROWS, encoding):
            check_columns(chunk, spec.columns, f"table '{report.table}' in format '{report.fmt}'", path)
            adapted = spec.adapt(chunk.reset_index(drop=True).astype("string"))
            parts.append(adapted.assign(source=f"{report.fmt}:{path.name}", row=adapted.index + offset + 1))
            report.rows_in += len(chunk)
            report.ignored += len(chunk) - len(adapted)
            offset += len(chunk)
    return pd.concat(parts, ignore_index=True)


def keep_latest(rows: pd.DataFrame, key: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the latest version of each key, the rows whose version time is no epoch-milliseconds number)."""
    millis = pd.to_numeric(rows[AS_OF], errors="coerce")
    bad = millis.isna() & rows[key].notna()
    rejected = rows[bad].assign(field="timestamp", reason="not a valid time (expected epoch milliseconds)")
    dated = rows[~bad].assign(_at=millis[~bad]).sort_values(["_at", "row"], kind="stable")
    keyed = dated[key].notna()
    latest = pd.concat([dated[~keyed], dated[keyed].drop_duplicates(key, keep="last")])
    return latest.drop(columns=["_at", AS_OF]).sort_values(["source", "row"], kind="stable"), rejected


def typed_extras(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns beyond the schema, as numbers where every present cell is one, else as text."""
    out = {}
    for name in frame.columns:
        text = frame[name].astype("string").str.strip().replace("", pd.NA)
        numbers = pd.to_numeric(text, errors="coerce")
        out[name] = numbers if numbers.notna().sum() == text.notna().sum() else text
    return pd.DataFrame(out, index=frame.index)


def check_offers(table: pd.DataFrame) -> pd.Series:
    """The offers naming a channel the service does not know (empty for other tables)."""
    if "channels" not in table.columns:
        return pd.Series(False, index=table.index)
    return table["channels"].fillna("").str.split("|").map(lambda names: not set(names) <= set(CHANNELS))


def validate_rows(rows: pd.DataFrame, schema: TableSchema) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(accepted canonical rows with typed extra columns, quarantined rows with source, row, field, reason)."""
    cells = rows.drop(columns=["source", "row"])
    accepted, quarantine = validate_table(cells, schema, "")
    kept = np.setdiff1d(np.arange(len(rows)), quarantine["row"].to_numpy() - 1)
    extras = [c for c in cells.columns if c not in schema.names]
    accepted = pd.concat([accepted, typed_extras(cells.iloc[kept][extras]).reset_index(drop=True)], axis=1)
    quarantine[["source", "row"]] = rows[["source", "row"]].iloc[quarantine["row"].to_numpy() - 1].to_numpy()
    unknown = check_offers(accepted).to_numpy() if schema is OFFERS else np.zeros(len(accepted), bool)
    if unknown.any():
        more = rows.iloc[kept[unknown]].assign(
            field="channels", reason=f"unknown channel (known: {', '.join(CHANNELS)})"
        )
        quarantine = pd.concat([quarantine, more], ignore_index=True)
        accepted = accepted[~unknown].reset_index(drop=True)
    return accepted, quarantine


def ingest_table(table: str, fmt: str, sources: list[Path], paths: Paths, encoding: str = "utf-8") -> TableReport:
    """Adapt, validate and store a table from its files; see the module docstring for what is written."""
    sources = [Path(p) for p in sources]
    if table not in SCHEMAS:
        raise ValueError(f"unknown table '{table}' (known tables: events, {', '.join(SCHEMAS)})")
    if fmt not in TABLE_FORMATS[table]:
        raise ValueError(
            f"{', '.join(map(str, sources))}: no format '{fmt}' for table '{table}' (formats: "
            f"{', '.join(TABLE_FORMATS[table])})"
        )
    schema, spec = SCHEMAS[table], TABLE_FORMATS[table][fmt]
    report = TableReport(table, fmt, sources, paths.raw / f"{table}.parquet", paths.quarantine / f"{table}-{fmt}.csv")
    rows = read_sources(report, spec, encoding)
    cells = [*QUARANTINE_COLUMNS, *rows.columns.drop(["source", "row"])]
    rejected = rows.iloc[:0].assign(field=None, reason=None)
    if AS_OF in rows.columns:
        latest, rejected = keep_latest(rows, schema.key)
        report.superseded = len(rows) - len(latest) - len(rejected)
        rows = latest
    accepted, quarantine = validate_rows(rows, schema)
    order = {f"{fmt}:{path.name}": i for i, path in enumerate(sources)}  # in file order, then row
    quarantine = (
        pd.concat([rejected, quarantine], ignore_index=True)
        .sort_values("row", kind="stable")
        .sort_values("source", key=lambda s: s.map(order), kind="stable")
    )
    report.accepted, report.quarantined = len(accepted), len(quarantine)
    report.reasons = dict(Counter(map(summarize_reason, quarantine["field"], quarantine["reason"])).most_common())
    report.first_rejected = describe_rejection(quarantine)
    if not report.accepted:
        first = f"; first rejected: {report.first_rejected}" if report.first_rejected else ""
        raise ValueError(
            f"{', '.join(map(str, sources))}: no {table} row accepted of {report.rows_in} read (format '{fmt}'){first}"
        )
    write_table(report, accepted, quarantine.reindex(columns=cells))
    return report


def write_table(report: TableReport, accepted: pd.DataFrame, quarantine: pd.DataFrame) -> None:
    """Write the table and its quarantine beside their targets, then put both in place."""
    report.table_path.parent.mkdir(parents=True, exist_ok=True)
    report.quarantine_path.parent.mkdir(parents=True, exist_ok=True)
    staged = [
        report.table_path.with_name(report.table_path.name + ".tmp"),
        report.quarantine_path.with_name(report.quarantine_path.name + ".tmp"),
    ]
    try:
        accepted.to_parquet(staged[0], index=False)
        quarantine.to_csv(staged[1], index=False)
        os.replace(staged[0], report.table_path)
        os.replace(staged[1], report.quarantine_path)
    finally:
        for path in staged:
            path.unlink(missing_ok=True)
