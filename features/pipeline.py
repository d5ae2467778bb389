"""The feature stage with its I/O: raw tables in, a training set and a filled online store out."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.definitions import FEATURES
from features.offline import build_training_set, choose_cutoffs
from features.online import open_store
from features.privacy import drop_erased
from features.training_set import write_training_set
from nbo.config import Paths


# Event columns with few distinct values (ids, vocabularies): read as categoricals, so that no string is
# materialised per row and the feature builder works on their codes.
DICTIONARY_COLUMNS = ["customer_id", "anonymous_id", "channel", "event_type", "category", "offer_id"]


def read_raw(paths: Paths, table: str, columns: list[str] | None = None) -> pd.DataFrame:
    """One canonical table from the raw folder: TABLE.parquet and the Parquet files in TABLE/ (only ``columns``
    when given)."""
    files = [p for p in [paths.raw / f"{table}.parquet"] if p.exists()]
    files += sorted((paths.raw / table).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no {table} in {paths.raw}: run `nbo generate` or `nbo ingest` first")
    if table == "events":  # without the events of erased customers (features.privacy)
        return drop_erased(paths, read_events(files, columns))
    return pd.concat([pd.read_parquet(p, columns=columns) for p in files], ignore_index=True)


def read_events(files: list[Path], columns: list[str] | None = None) -> pd.DataFrame:
    """Events from Parquet files, the ``DICTIONARY_COLUMNS`` as categoricals (one set of categories)."""
    tables = []
    for path in files:
        names = pq.read_schema(path).names
        tables.append(pq.read_table(path, columns=columns,
                                    read_dictionary=[c for c in DICTIONARY_COLUMNS if c in names]))
    return pa.concat_tables(tables, promote_options="permissive").unify_dictionaries().to_pandas()


def build_features(paths: Paths, n_cutoffs: int = 6, horizon_days: int = 7) -> dict[str, object]:
    """Write the point-in-time training set and load every event into the online store."""
    events = read_raw(paths, "events")
    categories = sorted(read_raw(paths, "items")["category"].dropna().unique().tolist())
    cutoffs = choose_cutoffs(events, n_cutoffs, horizon_days)
    training = build_training_set(events, cutoffs, horizon_days, categories, list(FEATURES))
    shutil.rmtree(paths.training_set, ignore_errors=True)
    write_training_set(training, paths.training_set)
    lineage = {"events": len(events), "rows": len(training.rows), "customer_rows": len(training.customers),
               "positives": int(training.rows["label"].sum()), "horizon_days": horizon_days,
               "cutoffs": [c.isoformat() for c in cutoffs], "events_sha256": hash_frame(events)}
    paths.training_set.with_suffix(".json").write_text(json.dumps(lineage, indent=2))
    store = open_store(paths)
    store.clear()
    written = store.write(events)
    store.close()
    return {**lineage, "online_events": written}


def hash_frame(frame: pd.DataFrame) -> str:
    """A content hash of a table, for data lineage."""
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()
