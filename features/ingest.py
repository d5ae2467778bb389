"""Ingest adapters: map each source format to canonical raw events, validate them, and store them.

Output layout under an NBO home (``Paths``), one pair of files per ingested source file:

* ``raw/events/{fmt}-{stem}.parquet``: the accepted canonical events (``EVENTS`` columns, ts in UTC).
* ``quarantine/{fmt}-{stem}.csv``: every rejected row with ``source`` (``{fmt}:{file name}``), ``row``
  (1-based data row of the source file, header not counted), ``field``, ``reason`` and the row's
  canonical columns as mapped by the adapter (unparsable cells keep their source text, timestamps
  followed by the expected format).

Both files are written whole and replaced atomically, so re-ingesting a file overwrites its previous
output, and a file none of whose rows is accepted (or that cannot be read) changes nothing: the error names
the file and its first rejected row, column and reason, or the line that could not be read. Event ids are
derived from the row's content when the source has none, so the same rows get the same ids. Rows with
identical content (hence identical ids) are quarantined as duplicates, also across chunks. Source timestamps without
a zone (CDNOW, UCI) are taken as UTC.

Items, offers and customers tables are ingested by features.ingest_tables.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.ingest_catalogue import supplied_files
from features.ingest_read import CHUNK_ROWS, check_columns, describe_rejection, read_chunks, summarize_reason
from features.privacy import find_erased, register_opt_outs
from features.schema import EVENTS, QUARANTINE_COLUMNS, validate_events
from nbo.config import Paths

ARROW_TYPES = {
    "string": pa.string(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "float": pa.float64(),
    "int": pa.int64(),
    "bool": pa.bool_(),
}
EVENTS_ARROW = pa.schema([(c.name, ARROW_TYPES[c.kind]) for c in EVENTS.columns])
QUARANTINE_FILE_COLUMNS = QUARANTINE_COLUMNS + EVENTS.names

REES46_EVENTS = {
    "view": "product_view",
    "cart": "add_to_cart",
    "remove_from_cart": "remove_from_cart",
    "purchase": "purchase",
}
RETAILROCKET_EVENTS = {"view": "product_view", "addtocart": "add_to_cart", "transaction": "purchase"}


def _to_events(raw: pd.DataFrame, **columns: object) -> pd.DataFrame:
    """A frame with every canonical event column, aligned on raw's rows (scalars are broadcast)."""
    return pd.DataFrame({name: columns.get(name) for name in EVENTS.names}, index=raw.index)


def _is_present(text: pd.Series) -> pd.Series:
    """Cells that hold something other than blanks."""
    return text.astype("string").str.strip().fillna("") != ""


def _or_text(values: pd.Series, text: pd.Series, expected: str | None = None) -> pd.Series:
    """Parsed values where parsing worked, the source text elsewhere so validation can name it.

    With ``expected``, the text is annotated with the expected format, which also stops validation's
    lenient parser from reading it another way (such as day-first dates).
    """
    if values.notna().all():
        return values
    if expected is not None:
        text = text.mask(_is_present(text), text.astype(str) + f" (expected {expected})")
    return values.astype(object).where(values.notna(), text)


def _parse_times(text: pd.Series, *formats: str, suffix: str = "") -> pd.Series:
    """Parse timestamps (as UTC) with the first format that fits each cell, after a required suffix.

    Stripping a constant suffix (such as " UTC") first keeps pandas on its fast ISO parsing path.
    """
    stripped = text.str.removesuffix(suffix).where(text.str.endswith(suffix))
    parsed = pd.Series(pd.NaT, index=text.index, dtype="datetime64[us, UTC]")
    for fmt in formats:
        parsed = parsed.fillna(pd.to_datetime(stripped, format=fmt, utc=True, errors="coerce"))
    return _or_text(parsed, text, " or ".join(fmt + suffix for fmt in formats))


def _rename_events(kinds: pd.Series, mapping: dict[str, str]) -> pd.Series:
    """Map source event names to canonical ones; unknown names are kept so validation rejects them."""
    return kinds.map(mapping).fillna(kinds)


def adapt_canonical(raw: pd.DataFrame) -> pd.DataFrame:
    """Canonical events: keep the canonical columns; a blank event_id is derived by validation."""
    events = raw.reindex(columns=EVENTS.names)
    events["event_id"] = events["event_id"].where(_is_present(events["event_id"]))
    return events


def adapt_cdnow(raw: pd.DataFrame) -> pd.DataFrame:
    """CDNOW master file: one purchase of CDs (category music) per customer-day row, on the web."""
    return _to_events(
        raw,
        ts=_parse_times(raw["date"], "%Y%m%d"),
        customer_id=raw["customer_id"],
        channel="web",
        event_type="purchase",
        category="music",
        amount=raw["dollar_value"],
        quantity=raw["number_of_cds"],
    )


def adapt_rees46(raw: pd.DataFrame) -> pd.DataFrame:
    """REES46 e-commerce behaviour: web events of known users; amount is the price on purchases."""
    event_type = _rename_events(raw["event_type"], REES46_EVENTS)
    code = raw["category_code"].str.strip()
    return _to_events(
        raw,
        ts=_parse_times(raw["event_time"], "%Y-%m-%d %H:%M:%S", suffix=" UTC"),
        customer_id=raw["user_id"],
        session_id=raw["user_session"],
        channel="web",
        event_type=event_type,
        item_id=raw["product_id"],
        category=code.where(code != "", raw["category_id"]),
        amount=raw["price"].where(event_type == "purchase"),
    )


def adapt_retailrocket(raw: pd.DataFrame) -> pd.DataFrame:
    """RetailRocket events of visitors, times in epoch ms. The visitorid is the customer_id: the source's only,
    and lasting, id of a person (as an anonymous_id no customer would ever own the events, so none is learnt).

    The source has no prices, yet the schema requires an amount on purchases: purchases get amount
    0.0, meaning "value unknown" (monetary features must not read it as free). The transactionid goes
    to session_id, which groups the items bought in one transaction as a basket does.
    """
    event_type = _rename_events(raw["event"], RETAILROCKET_EVENTS)
    millis = pd.to_numeric(raw["timestamp"], errors="coerce")
    ts = _or_text(pd.to_datetime(millis, unit="ms", utc=True, errors="coerce"), raw["timestamp"], "epoch milliseconds")
    return _to_events(
        raw,
        ts=ts,
        customer_id=raw["visitorid"],
        session_id=raw["transactionid"],
        channel="web",
        event_type=event_type,
        item_id=raw["itemid"],
        amount=pd.Series(0.0, index=raw.index).where(event_type == "purchase"),
    )


def adapt_uci(raw: pd.DataFrame) -> pd.DataFrame:
    """UCI Online Retail invoice lines: purchases, or returns for cancelled invoices ("C..."), on the web.

    Cancellation lines carry negative quantities in the source and are sign-flipped, so a line whose
    sign contradicts its invoice (or a negative price) ends up negative and is quarantined. The
    invoice number is the session (it groups a basket); dates are month/day/year.
    """
    invoice = raw["InvoiceNo"].str.strip()
    sign = np.where(invoice.str.upper().str.startswith("C"), -1.0, 1.0)
    quantity = pd.to_numeric(raw["Quantity"], errors="coerce") * sign
    price = pd.to_numeric(raw["UnitPrice"], errors="coerce")
    return _to_events(
        raw,
        ts=_parse_times(raw["InvoiceDate"], "%m/%d/%Y %H:%M", "%Y-%m-%d %H:%M:%S"),
        customer_id=raw["CustomerID"].str.strip().str.replace(r"\.0$", "", regex=True),
        session_id=invoice,
        channel="web",
        event_type=np.where(sign < 0, "return", "purchase"),
        item_id=raw["StockCode"],
        amount=_or_text(quantity * price, raw["UnitPrice"].where(price.isna())),
        quantity=_or_text(quantity, raw["Quantity"]),
    )


@dataclass(frozen=True)
class SourceFormat:
    """How to read one source format: its adapter, required source columns and CSV separator."""

    adapt: Callable[[pd.DataFrame], pd.DataFrame]
    columns: tuple[str, ...]
    sep: str = ","


FORMATS: dict[str, SourceFormat] = {
    "canonical": SourceFormat(adapt_canonical, tuple(c.name for c in EVENTS.columns if c.required)),
    "cdnow": SourceFormat(adapt_cdnow, ("customer_id", "date", "number_of_cds", "dollar_value"), sep=r"\s+"),
    "rees46": SourceFormat(
        adapt_rees46,
        ("event_time", "event_type", "product_id", "category_id", "category_code", "price", "user_id", "user_session"),
    ),
    "retailrocket": SourceFormat(adapt_retailrocket, ("timestamp", "visitorid", "event", "itemid", "transactionid")),
    "uci": SourceFormat(adapt_uci, ("InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID")),
}


@dataclass
class IngestReport:
    """What one ingest did; rows_in == accepted + quarantined + erased."""

    fmt: str
    source: Path
    events_path: Path
    quarantine_path: Path
    rows_in: int = 0
    accepted: int = 0
    quarantined: int = 0
    erased: int = 0  # rows of customers or devices erased since (``nbo forget``), left out
    reasons: dict[str, int] = field(default_factory=dict)
    first_rejected: str | None = None  # the first quarantined row: row, column and reason


def _split_repeats(
    accepted: pd.DataFrame, quarantine: pd.DataFrame, seen: set[str], source: str, offset: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Quarantine accepted events whose id an earlier chunk already accepted; number rows by file."""
    quarantine = quarantine.assign(row=quarantine["row"] + offset)
    rejected_rows = quarantine["row"].to_numpy() - offset - 1
    rows = np.setdiff1d(np.arange(len(accepted) + len(quarantine)), rejected_rows) + offset + 1
    repeat = accepted["event_id"].isin(seen).to_numpy()
    seen.update(accepted.loc[~repeat, "event_id"])
    if not repeat.any():
        return accepted, quarantine
    repeats = accepted.loc[repeat].astype("string")
    repeats.insert(0, "reason", "duplicate key")
    repeats.insert(0, "field", "event_id")
    repeats.insert(0, "row", rows[repeat])
    repeats.insert(0, "source", source)
    merged = pd.concat([quarantine, repeats], ignore_index=True).sort_values("row", ignore_index=True)
    return accepted.loc[~repeat].reset_index(drop=True), merged


def _write_outputs(
    report: IngestReport,
    spec: SourceFormat,
    source: str,
    now: pd.Timestamp,
    events_tmp: Path,
    quarantine_tmp: Path,
    chunk_rows: int,
    known_offers: set[str] | None,
    paths: Paths,
    encoding: str,
) -> None:
    """Stream the file's chunks through adapter and validation into the two output files."""
    reasons: Counter[str] = Counter()
    seen: set[str] = set()
    with pq.ParquetWriter(events_tmp, EVENTS_ARROW) as writer, open(quarantine_tmp, "w", newline="") as out:
        pd.DataFrame(columns=QUARANTINE_FILE_COLUMNS).to_csv(out, index=False)
        for chunk in read_chunks(report.source, spec.sep, chunk_rows, encoding):
            check_columns(chunk, spec.columns, f"format '{report.fmt}'", report.source)
            accepted, quarantine = validate_events(spec.adapt(chunk), source, now=now, known_offers=known_offers)
            accepted, quarantine = _split_repeats(accepted, quarantine, seen, source, report.rows_in)
            erased, unsure = find_erased(paths, accepted), find_erased(paths, quarantine.drop(columns="ts"))
            accepted, quarantine = accepted[~erased].astype({"ts": "datetime64[us, UTC]"}), quarantine[~unsure]
            register_opt_outs(paths, accepted)
            report.erased += int(erased.sum() + unsure.sum())
            writer.write_table(pa.Table.from_pandas(accepted, schema=EVENTS_ARROW, preserve_index=False))
            quarantine.reindex(columns=QUARANTINE_FILE_COLUMNS).to_csv(out, header=False, index=False)
            reasons.update(map(summarize_reason, quarantine["field"], quarantine["reason"]))
            report.first_rejected = report.first_rejected or describe_rejection(quarantine)
            report.rows_in += len(chunk)
            report.accepted += len(accepted)
            report.quarantined += len(quarantine)
    report.reasons = dict(reasons.most_common())


def ingest_file(
    fmt: str,
    path: Path,
    paths: Paths,
    now: pd.Timestamp | None = None,
    chunk_rows: int = CHUNK_ROWS,
    encoding: str = "utf-8",
) -> IngestReport:
    """Adapt, validate and store one source file; see the module docstring for the output layout.
    When the home was given an offers table, events naming another offer are quarantined."""
    path = Path(path)
    if fmt not in FORMATS:
        raise ValueError(f"{path}: unknown format '{fmt}' (known formats: {', '.join(FORMATS)})")
    spec, source = FORMATS[fmt], f"{fmt}:{path.name}"
    now = now or pd.Timestamp.now(tz="UTC")
    report = IngestReport(
        fmt, path, paths.raw / "events" / f"{fmt}-{path.stem}.parquet", paths.quarantine / f"{fmt}-{path.stem}.csv"
    )
    report.events_path.parent.mkdir(parents=True, exist_ok=True)
    report.quarantine_path.parent.mkdir(parents=True, exist_ok=True)
    events_tmp = report.events_path.with_name(report.events_path.name + ".tmp")
    quarantine_tmp = report.quarantine_path.with_name(report.quarantine_path.name + ".tmp")
    offers = supplied_files(paths, "offers")
    known_offers = (
        set(pd.concat([pd.read_parquet(p, columns=["offer_id"]) for p in offers])["offer_id"]) if offers else None
    )
    try:
        _write_outputs(report, spec, source, now, events_tmp, quarantine_tmp, chunk_rows, known_offers, paths, encoding)
        refuse_if_all_rejected(report)
        os.replace(events_tmp, report.events_path)
        os.replace(quarantine_tmp, report.quarantine_path)
    finally:
        events_tmp.unlink(missing_ok=True)
        quarantine_tmp.unlink(missing_ok=True)
    return report


def refuse_if_all_rejected(report: IngestReport) -> None:
    """Raise a ValueError naming the file, its first rejected row and the commonest reasons when rows were
    rejected and none was accepted: such a file is the wrong format or broken, and replaces nothing."""
    if report.accepted or not report.quarantined:
        return
    common = "; ".join(f"{reason} ({n} rows)" for reason, n in list(report.reasons.items())[:3])
    raise ValueError(
        f"{report.source}: none of its {report.rows_in} rows was accepted as format '{report.fmt}'; "
        f"first rejected: {report.first_rejected}; commonest reasons: {common}"
    )
