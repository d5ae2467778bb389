"""Reading source files for ingest: chunks of text cells, and errors that name the file and the line."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

CHUNK_ROWS = 200_000
REASON_DETAIL = re.compile(r"\s*[:(].*$")


def read_chunks(
    path: Path, sep: str = ",", chunk_rows: int = CHUNK_ROWS, encoding: str = "utf-8"
) -> Iterator[pd.DataFrame]:
    """Read a file in chunks by suffix: .parquet, .jsonl/.json (JSON lines), else delimited text (every cell as
    text). A file that cannot be read raises a ValueError naming it and, for text, the line."""
    try:
        yield from _chunks(path, sep, chunk_rows, encoding)
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: line {first_undecodable_line(path, encoding)} is not {encoding} text "
            f"({error.reason}); pass the file's encoding, such as --encoding latin-1"
        ) from error
    except pd.errors.EmptyDataError as error:
        raise ValueError(f"{path}: the file is empty (no header line)") from error
    except pd.errors.ParserError as error:
        raise ValueError(f"{path}: not readable as '{sep}'-separated text: {error}".strip()) from error
    except (pa.ArrowException, ValueError) as error:
        if str(path) in str(error):
            raise
        raise ValueError(f"{path}: not readable as {path.suffix.lstrip('.') or 'text'}: {error}") from error


def _chunks(path: Path, sep: str, chunk_rows: int, encoding: str) -> Iterator[pd.DataFrame]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            yield batch.to_pandas()
    elif suffix in (".jsonl", ".json"):
        yield from pd.read_json(
            path, lines=True, chunksize=chunk_rows, dtype=False, convert_dates=False, encoding=encoding
        )
    else:
        for chunk in pd.read_csv(
            path, sep=sep, dtype=str, keep_default_na=False, chunksize=chunk_rows, encoding=encoding
        ):
            yield chunk.rename(columns=str.strip)


def first_undecodable_line(path: Path, encoding: str) -> int:
    """The 1-based number of the first line of a file that is not text in the encoding (0 when every line is)."""
    with open(path, "rb") as source:
        for number, line in enumerate(source, start=1):
            try:
                line.decode(encoding)
            except UnicodeDecodeError:
                return number
    return 0


def check_columns(chunk: pd.DataFrame, required: tuple[str, ...], what: str, path: Path) -> None:
    """Raise a ValueError naming the file and the source columns ``what`` needs but the file lacks."""
    missing = [c for c in required if c not in chunk.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {', '.join(missing)} required by {what} "
            f"(found: {', '.join(map(str, chunk.columns))})"
        )


def describe_rejection(quarantine: pd.DataFrame) -> str | None:
    """The first quarantined row in words: file, row, column and reason (None when none was)."""
    if quarantine.empty:
        return None
    first = quarantine.iloc[0]
    return f"{first['source']} row {first['row']}, column {first['field']}: {first['reason']}"


def summarize_reason(field_name: str, reason: str) -> str:
    """A histogram key: the field and the reason without its example value or allowed list."""
    return f"{field_name}: {REASON_DETAIL.sub('', reason)}"
