"""The event lake: append, compact, read, deduplicate, with processes writing at once."""

import json
import multiprocessing
import os

import pandas as pd
import pyarrow.parquet as pq
import pytest

from features.fingerprints import fingerprint
from features.forget import erase_from_segment
from features.lake import LakeWriter, append_to_lake, compact_lake, partition_files, read_lake, segment_files
from features.pipeline import read_raw
from features.privacy import PrivacyRegister, register_path
from nbo.config import get_paths
from tests.conftest import build_events

DAY = pd.Timestamp("2025-03-01", tz="UTC")


def views(
    prefix: str, n: int, start: pd.Timestamp = DAY, customer: str | None = "c1", device: str | None = None
) -> pd.DataFrame:
    """n product views with ids PREFIX-i, one every 3 hours from start."""
    return build_events(
        [
            dict(
                event_id=f"{prefix}-{i}",
                ts=start + pd.Timedelta(hours=3 * i),
                customer_id=customer,
                anonymous_id=device,
                event_type="product_view",
                category="tea",
            )
            for i in range(n)
        ]
    )


def test_events_come_back_as_they_were_kept(tmp_path):
    paths = get_paths(tmp_path)
    events = build_events(
        [
            dict(
                event_id="p1",
                ts="2025-03-01T10:00:00.123456Z",
                customer_id="c1",
                event_type="purchase",
                category='thé "vert"',
                amount=12.5,
                quantity=2.0,
                item_id="i1",
                session_id="s1",
            ),
            dict(event_id="v1", ts="2025-03-02T23:59:59Z", anonymous_id="d1", event_type="page_view"),
        ]
    )
    assert append_to_lake(paths, events) == 2
    back = read_lake(paths)
    pd.testing.assert_frame_equal(back.astype(events.dtypes), events, check_dtype=True)
    assert str(back["ts"].dtype) == "datetime64[us, UTC]" and back["amount"].dtype == "float64"
    compact_lake(paths)
    pd.testing.assert_frame_equal(read_lake(paths).astype(events.dtypes), events)
    assert fingerprint(read_raw(paths, "events")) == fingerprint(events)  # a resend after a build is a duplicate
    assert [p.parent.name for p in partition_files(paths.lake)] == ["date=2025-03-01", "date=2025-03-02"]


def test_a_line_cut_short_by_a_crash_is_not_read(tmp_path):
    paths = get_paths(tmp_path)
    append_to_lake(paths, views("v", 3))
    [segment] = segment_files(paths.lake)
    with open(segment, "ab") as out:  # a write the crash interrupted: never acknowledged
        out.write(b'{"event_id": "torn", "ts": "2025-03-0')
    assert read_lake(paths)["event_id"].tolist() == ["v-0", "v-1", "v-2"]
    assert compact_lake(paths)["events"] == 3 and segment_files(paths.lake) == []


def test_resends_are_kept_once_and_compaction_is_idempotent(tmp_path):
    paths = get_paths(tmp_path)
    append_to_lake(paths, views("v", 4))
    append_to_lake(paths, views("v", 4).iloc[2:])  # a batch resent after a lost answer
    assert read_lake(paths)["event_id"].tolist() == ["v-0", "v-1", "v-2", "v-3"]
    assert compact_lake(paths) == {"segments": 1, "events": 4, "partitions": ["2025-03-01"], "expired": []}
    append_to_lake(paths, views("v", 6))  # resent again after compaction, with two new ones
    assert read_lake(paths)["event_id"].tolist() == [f"v-{i}" for i in range(6)]
    assert compact_lake(paths)["events"] == 2
    assert compact_lake(paths)["events"] == 0
    stored = pd.concat([pd.read_parquet(p) for p in partition_files(paths.lake)])
    assert sorted(stored["event_id"]) == [f"v-{i}" for i in range(6)]


def test_a_writer_whose_segment_was_compacted_writes_a_new_one(tmp_path):
    paths = get_paths(tmp_path)
    writer = LakeWriter(paths.lake)
    writer.append(views("a", 2))
    first = writer.path
    compact_lake(paths)
    writer.append(views("b", 2))
    assert writer.path != first and not first.exists()
    assert sorted(read_lake(paths)["event_id"]) == ["a-0", "a-1", "b-0", "b-1"]


def test_a_compaction_that_died_is_finished_by_the_next(tmp_path):
    paths = get_paths(tmp_path)
    append_to_lake(paths, views("v", 3))
    taken = paths.lake / "compacting"
    taken.mkdir()
    [segment] = segment_files(paths.lake)
    segment.rename(taken / segment.name)  # moved, then the compaction died
    assert len(read_lake(paths)) == 3
    assert compact_lake(paths)["events"] == 3 and not list(taken.iterdir())


def test_partitions_older_than_the_retention_go(tmp_path, monkeypatch):
    paths = get_paths(tmp_path)
    append_to_lake(paths, views("old", 1, DAY - pd.Timedelta(days=40)))
    append_to_lake(paths, views("new", 1))
    monkeypatch.setenv("NBO_LAKE_RETENTION_DAYS", "30")
    assert compact_lake(paths)["expired"] == ["2025-01-20"]
    assert read_lake(paths)["event_id"].tolist() == ["new-0"]
    monkeypatch.setenv("NBO_LAKE_RETENTION_DAYS", "soon")
    with pytest.raises(ValueError, match="NBO_LAKE_RETENTION_DAYS"):
        compact_lake(paths)


def test_compaction_leaves_erased_customers_out(tmp_path):
    paths = get_paths(tmp_path)
    append_to_lake(paths, pd.concat([views("kim", 2, customer="kim"), views("lee", 2, customer="lee")]))
    register = PrivacyRegister(register_path(paths))
    register.record_erasure("kim", [], pd.Timestamp.now(tz="UTC"))
    register.close()
    compact_lake(paths)
    assert pd.read_parquet(partition_files(paths.lake)[0])["customer_id"].tolist() == ["lee", "lee"]


def test_erasing_a_segment_keeps_its_writer_writing(tmp_path):
    paths = get_paths(tmp_path)
    writer = LakeWriter(paths.lake)
    writer.append(pd.concat([views("kim", 2, customer="kim"), views("dev", 1, customer=None, device="kims-phone")]))
    writer.append(views("lee", 1, customer="lee", device="lees-phone"))
    segment = writer.path
    assert erase_from_segment(segment, "kim", {"kims-phone"}) == 3
    assert b"kim" not in segment.read_bytes()
    writer.append(views("lee-2", 1, customer="lee"))  # the writer moves to a new segment, nothing is lost
    assert writer.path != segment
    assert sorted(read_lake(paths)["event_id"]) == ["lee-0", "lee-2-0"]


def append_batches(home: str, name: str, batches: int, size: int, compacting) -> None:
    """A process of its own appending batches (some sent twice, as a client resending) while compactions run."""
    paths = get_paths(home)
    base = views(name, size)
    compacting.wait(60)
    for b in range(batches):
        events = base.assign(
            event_id=[f"{name}-{b}-{i}" for i in range(size)], ts=base["ts"] + pd.Timedelta(days=b % 5)
        )
        append_to_lake(paths, events)
        if b % 7 == 0:
            append_to_lake(paths, events)


def compact_while(home: str, compacting, stop) -> None:
    paths = get_paths(home)
    while not stop.is_set():
        compact_lake(paths)
        compacting.set()


def test_two_processes_appending_while_another_compacts_lose_nothing_and_double_nothing(tmp_path):
    paths = get_paths(tmp_path)
    context = multiprocessing.get_context("spawn")
    compacting, stop = context.Event(), context.Event()
    compactor = context.Process(target=compact_while, args=(str(tmp_path), compacting, stop))
    writers = [
        context.Process(target=append_batches, args=(str(tmp_path), name, 300, 8, compacting)) for name in ("w1", "w2")
    ]
    compactor.start()
    for process in writers:
        process.start()
    for process in writers:
        process.join(120)
        assert process.exitcode == 0
    stop.set()
    compactor.join(60)
    assert compactor.exitcode == 0
    expected = sorted(f"{w}-{b}-{i}" for w in ("w1", "w2") for b in range(300) for i in range(8))
    assert sorted(read_lake(paths)["event_id"]) == expected
    compact_lake(paths)
    assert segment_files(paths.lake) == []
    stored = pd.concat([pd.read_parquet(p) for p in partition_files(paths.lake)], ignore_index=True)
    assert sorted(stored["event_id"]) == expected  # each once: nothing lost, nothing doubled
    assert all(pq.read_metadata(p).num_rows for p in partition_files(paths.lake))


def test_features_read_the_lake_with_raw_sources_first_occurrence_winning(tmp_path):
    paths = get_paths(tmp_path)
    paths.raw.mkdir(parents=True)
    raw = views("raw", 4)
    raw.to_parquet(paths.raw / "events.parquet", index=False)
    before = read_raw(paths, "events")
    assert not paths.lake.exists()
    resent = views("raw", 4).iloc[1:3].assign(category="coffee")  # same ids as raw rows: raw's rows win
    append_to_lake(paths, pd.concat([resent, views("live", 2, DAY + pd.Timedelta(days=1))]))
    events = read_raw(paths, "events")
    assert events["event_id"].tolist() == ["raw-0", "raw-1", "raw-2", "raw-3", "live-0", "live-1"]
    assert (events["category"] == "tea").all() and isinstance(events["customer_id"].dtype, pd.CategoricalDtype)
    pd.testing.assert_frame_equal(events.head(4), before)
    subset = read_raw(paths, "events", ["ts", "customer_id"])
    assert list(subset.columns) == ["ts", "customer_id"] and len(subset) == 6
    compact_lake(paths)
    pd.testing.assert_frame_equal(read_raw(paths, "events"), events)


def test_a_lake_alone_is_enough_to_read_events(tmp_path):
    paths = get_paths(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_raw(paths, "events")
    append_to_lake(paths, views("live", 2))
    assert read_raw(paths, "events")["event_id"].tolist() == ["live-0", "live-1"]


def test_segments_are_json_lines_of_canonical_events(tmp_path):
    paths = get_paths(tmp_path)
    append_to_lake(paths, views("v", 1))
    [segment] = segment_files(paths.lake)
    assert segment.parent.name == "incoming" and str(os.getpid()) in segment.name
    line = json.loads(segment.read_text())
    assert line["event_id"] == "v-0" and line["ts"] == "2025-03-01T00:00:00.000000Z" and line["amount"] is None


def test_nbo_compact_compacts_and_names_a_bad_retention(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from nbo.cli import app

    append_to_lake(get_paths(tmp_path), views("v", 2))
    result = CliRunner().invoke(app, ["compact", "--home", str(tmp_path)])
    assert result.exit_code == 0 and json.loads(result.output)["events"] == 2, result.output
    monkeypatch.setenv("NBO_LAKE_RETENTION_DAYS", "-3")
    result = CliRunner().invoke(app, ["compact", "--home", str(tmp_path)])
    assert result.exit_code == 2 and "NBO_LAKE_RETENTION_DAYS" in result.output
