"""The right to be forgotten and opt-outs, without HTTP: a forgotten customer leaves no byte in the home."""

import shutil
import sqlite3
import uuid

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from test_online import redis_url  # noqa: F401  (shared fixture)

from features.forget import erase_csv, erase_parquet, forget_customer, linked_devices
from features.ingest import ingest_file
from features.lake import append_to_lake, compact_lake, read_lake
from features.online import OnlineStore
from features.online_redis import RedisStore
from features.privacy import OPTED_OUT, PrivacyRegister, drop_erased, drop_opted_out, register_path
from nbo.config import get_paths
from serving.decisions import DecisionLog
from serving.recommender import Recommender

LIVE_DEVICE = "dev-of-forgotten-42"


def mentions(paths, needles: list[str]) -> list[str]:
    """Every file under the home whose bytes, or whose Parquet string cells, contain one of the needles."""
    found = []
    for path in sorted(p for p in paths.home.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if any(n.encode() in data for n in needles):
            found.append(str(path))
        elif path.suffix == ".parquet":
            frame = pd.read_parquet(path)
            text = frame.select_dtypes(exclude="number").astype(str)
            if text.apply(lambda column: column.str.contains("|".join(needles), regex=True)).any().any():
                found.append(f"{path} (cells)")
    return found


def checkpoint(paths) -> None:
    """Fold every write-ahead log into its database (what a reader of the files would see after a restart)."""
    for path in paths.home.rglob("*.sqlite"):
        db = sqlite3.connect(path)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()


@pytest.fixture
def home(trained_home, tmp_path):
    """A private copy of the trained home."""
    paths = get_paths(tmp_path / "home")
    shutil.copytree(trained_home[0].home, paths.home)
    return paths


def pick_customer(paths) -> tuple[str, set[str]]:
    """A simulated customer with devices linked to them, and those devices."""
    events = pd.read_parquet(paths.raw / "events.parquet", columns=["customer_id", "anonymous_id"]).dropna()
    for customer_id in events["customer_id"].value_counts().index[5:]:
        devices = linked_devices(paths, customer_id)
        if devices:
            return customer_id, devices
    raise AssertionError("no customer with a linked device")


def test_forget_leaves_no_trace_anywhere_in_the_home(home, make_events):
    from training.lifetime.values import fit_lifetime

    fit_lifetime(home)
    customer_id, devices = pick_customer(home)
    bad = pd.DataFrame(
        [  # an ingested file: a good row, a row refused, both naming the customer
            {
                "event_id": f"ingest-{customer_id}-1",
                "ts": "2025-03-01T10:00:00Z",
                "customer_id": customer_id,
                "channel": "web",
                "event_type": "page_view",
            },
            {"ts": "not a time", "customer_id": customer_id, "channel": "web", "event_type": "page_view"},
        ]
    )
    bad.to_csv(home.home / "old-export.csv", index=False)
    ingest_file("canonical", home.home / "old-export.csv", home)
    (home.home / "old-export.csv").rename(home.home.parent / "old-export.csv")  # the source stays outside
    recommender = Recommender.from_home(home)
    now = pd.Timestamp.now(tz="UTC").floor("s")
    recommender.store.write(
        make_events(
            [  # live events: browsing on a new device, then a login linking it
                dict(
                    event_id=f"live-{customer_id}-view",
                    ts=now - pd.Timedelta(minutes=5),
                    anonymous_id=LIVE_DEVICE,
                    event_type="product_view",
                    category="tea",
                ),
                dict(
                    event_id="opaque-id-1",
                    ts=now - pd.Timedelta(minutes=1),
                    anonymous_id=LIVE_DEVICE,
                    customer_id=customer_id,
                    event_type="login",
                ),
            ]
        )
    )
    decision = recommender.recommend(customer_id, "web", now=now)
    assert decision.offers and recommender.store.rows(customer_id) is not None
    clicks = make_events(
        [
            dict(
                event_id=f"click-{uuid.uuid4().hex}",
                ts=now,
                customer_id=customer_id,
                event_type="offer_click",
                offer_id=decision.offers[0].offer_id,
                decision_id=decision.decision_id,
            )
        ]
    )
    assert recommender.log.record_outcomes(clicks) == 1
    lake_events = make_events(
        [
            dict(
                event_id=f"lake-{customer_id}-{i}",
                ts=now - pd.Timedelta(days=i),
                customer_id=customer_id,
                event_type="product_view",
                category="tea",
            )
            for i in (1, 2)
        ]
    )
    append_to_lake(home, lake_events.iloc[:1])
    assert compact_lake(home)["events"] == 1  # one in a day partition, the others in this process's live segment
    append_to_lake(
        home,
        pd.concat(
            [
                lake_events.iloc[1:],
                make_events(
                    [
                        dict(event_id="lake-device", ts=now, anonymous_id=LIVE_DEVICE, event_type="page_view"),
                        dict(event_id="lake-other", ts=now, customer_id="someone-else", event_type="page_view"),
                    ]
                ),
            ]
        ),
    )
    needles = [customer_id, LIVE_DEVICE, *devices]
    assert len(mentions(home, needles)) >= 8  # raw, ingested, quarantine, lifetime, training set, stores...

    for db in (recommender.store.db, recommender.log.db):
        db.execute("PRAGMA secure_delete=OFF")  # as most SQLite builds: deleted bytes stay in their pages
    erased = forget_customer(home, customer_id, recommender.store, recommender.log)
    recommender.log.close()
    recommender.store.close()

    assert erased["online store"] > 0 and erased["decision log"] >= len(decision.offers) + 1
    for place in (
        "raw/events.parquet",
        "raw/customers.parquet",
        "lifetime.parquet",
        "features/training-set/rows/part.00000.parquet",
        "quarantine/canonical-old-export.csv",
        "raw/events/canonical-old-export.parquet",
    ):
        assert erased[place] > 0, place
    assert sum(n for place, n in erased.items() if place.startswith("lake/date=")) == 1
    assert sum(n for place, n in erased.items() if place.startswith("lake/incoming/")) == 2
    checkpoint(home)
    assert mentions(home, needles) == []
    assert pd.read_parquet(home.raw / "events.parquet")["customer_id"].notna().sum() > 1000  # others are kept
    assert read_lake(home)["event_id"].tolist() == ["lake-other"]

    report = ingest_file("canonical", home.home.parent / "old-export.csv", home)  # an old file comes back
    assert (report.accepted, report.quarantined, report.erased) == (0, 0, 2)
    assert mentions(home, [customer_id]) == []


def test_erased_events_are_left_out_until_the_erasure_only(tmp_path, make_events):
    paths = get_paths(tmp_path)
    register = PrivacyRegister(register_path(paths))
    register.record_erasure("kim", ["kims-phone"], pd.Timestamp("2025-02-01", tz="UTC"))
    events = make_events(
        [
            dict(ts="2025-01-10", customer_id="kim", event_type="login"),
            dict(ts="2025-01-11", anonymous_id="kims-phone", event_type="page_view"),
            dict(ts="2025-01-12", customer_id="lee", anonymous_id="lees-phone", event_type="login"),
            dict(ts="2025-03-01", customer_id="kim", event_type="login"),
        ]
    )  # came back later
    assert register.erased_rows(events).tolist() == [True, True, False, False]
    assert drop_erased(paths, events)["customer_id"].tolist() == ["lee", "kim"]
    register.close()
    assert b"kim" not in register_path(paths).read_bytes()  # digests only


def test_erase_parquet_rewrites_dictionaries_and_statistics(tmp_path):
    path = tmp_path / "t.parquet"
    table = pa.table(
        {
            "customer_id": pa.array(["aaa-secret", "bbb", "ccc"]).dictionary_encode(),
            "anonymous_id": ["x", "dev-1", None],
            "v": [1, 2, 3],
        }
    )
    pq.write_table(table, path, compression="NONE")
    assert b"aaa-secret" in path.read_bytes()
    assert erase_parquet(path, "aaa-secret", {"dev-1"}) == 2
    assert b"aaa-secret" not in path.read_bytes() and b"dev-1" not in path.read_bytes()
    assert pd.read_parquet(path)["v"].tolist() == [3]
    assert erase_parquet(path, "nobody", set()) == 0


def test_erase_csv_drops_rows_that_mention_an_id_as_a_word(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text("row,reason,customer_id\n1,\"not a valid timestamp: ['c1']\",\n2,bad,c10\n3,bad,c1\n")
    assert erase_csv(path, ["c1"]) == 2
    assert path.read_text() == "row,reason,customer_id\n2,bad,c10\n"


def test_redis_store_forgets_a_customer_and_their_devices(redis_url, make_events):  # noqa: F811
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    store = RedisStore(redis_url)
    store.write(
        make_events(
            [
                dict(
                    event_id="e-kim-1",
                    ts="2025-01-01",
                    anonymous_id="kims-phone",
                    event_type="product_view",
                    category="tea",
                ),
                dict(event_id="e2", ts="2025-01-02", anonymous_id="kims-phone", customer_id="kim", event_type="login"),
                dict(
                    event_id="e3", ts="2025-01-02", customer_id="lee", event_type="purchase", amount=5.0, category="tea"
                ),
            ]
        )
    )
    erased, devices = store.forget("kim")
    assert devices == ["kims-phone"] and erased >= 4
    assert store.rows("kim") is None and store.customers() == ["lee"]
    dump = b"".join(client.dump(key) or b"" for key in client.keys("*"))
    assert b"kim" not in dump and store.rows("lee") is not None
    store.close()
    client.close()


def test_an_opted_out_customer_gets_no_offer_on_any_channel(home, make_events):
    recommender = Recommender.from_home(home)
    customer_id = pick_customer(home)[0]
    now = pd.Timestamp.now(tz="UTC").floor("s")
    assert recommender.recommend(customer_id, "web", now=now).offers
    opt_out = make_events(
        [dict(ts=now - pd.Timedelta(seconds=1), customer_id=customer_id, channel="email", event_type="opt_out")]
    )
    assert recommender.store.write(opt_out) == 1 and recommender.privacy.record_opt_outs(opt_out) == 1
    logged = len(recommender.log.contacts(customer_id, 0))
    for channel in ("web", "app", "email", "sms"):
        decision = recommender.recommend(customer_id, channel, now=now)
        assert decision.offers == [] and decision.withheld == OPTED_OUT
    assert len(recommender.log.contacts(customer_id, 0)) == logged  # nothing served, nothing logged
    assert recommender.recommend("c0000001", "web", now=now).withheld is None
    people = pd.DataFrame({"customer_id": [customer_id, "c0000001"]})
    assert drop_opted_out(home, people)["customer_id"].tolist() == ["c0000001"]
    recommender.log.close()


def test_sqlite_forget_drops_other_processes_caches(tmp_path, make_events):
    path = tmp_path / "store.sqlite"
    writer, reader = OnlineStore(path), OnlineStore(path)
    writer.db.execute("PRAGMA secure_delete=OFF")  # as most SQLite builds: deleted bytes stay in their pages
    writer.write(
        make_events([dict(ts="2025-01-01", customer_id="kim", event_type="purchase", amount=3.0, category="tea")])
    )
    assert reader.rows("kim") is not None
    assert writer.forget("kim")[0] >= 2
    assert reader.rows("kim") is None
    writer.close()
    reader.close()
    assert b"kim" not in path.read_bytes()


def test_forget_on_an_empty_log_and_store(tmp_path):
    paths = get_paths(tmp_path)
    paths.raw.mkdir()
    store, log = OnlineStore(paths.online_store), DecisionLog(paths.decisions)
    assert forget_customer(paths, "nobody", store, log) == {"online store": 0, "decision log": 0}
    store.close()
    log.close()
