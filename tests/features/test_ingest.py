"""Ingest adapters: canonical mapping, quarantine reasons, row accounting and idempotence."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.ingest import FORMATS, IngestReport, ingest_file
from nbo.config import Paths, get_paths

NOW = pd.Timestamp("2024-01-01", tz="UTC")
CDNOW_MASTER = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cdnow" / "CDNOW_master.txt"

CANONICAL = pd.DataFrame(
    [
        ["e1", "2023-05-01T10:00:00Z", "c1", "", "web", "purchase", "i1", "10.5", "1"],
        ["", "2023-05-01T10:01:00Z", "", "", "web", "page_view", "", "", ""],
        ["e3", "not-a-date", "c1", "", "web", "page_view", "", "", ""],
        ["e4", "2023-05-01T10:03:00Z", "c1", "", "web", "teleport", "", "", ""],
        ["e5", "2023-05-01T10:04:00Z", "c1", "", "web", "purchase", "i1", "-2", "1"],
        ["e6", "2023-05-01T10:05:00Z", "c1", "", "web", "purchase", "i1", "3", "two"],
        ["e1", "2023-05-01T10:06:00Z", "c2", "", "app", "login", "", "", ""],
        ["e8", "2030-01-01T00:00:00Z", "c1", "", "web", "login", "", "", ""],
        ["", "2023-05-01T10:08:00Z", "", "a9", "app", "search", "", "", ""],
    ],
    columns=["event_id", "ts", "customer_id", "anonymous_id", "channel", "event_type", "item_id", "amount", "quantity"],
)
CANONICAL_BAD = {2: "customer_id", 3: "ts", 4: "event_type", 5: "amount", 6: "quantity", 7: "event_id", 8: "ts"}

CDNOW = """ customer_id  date number_of_cds  dollar_value
 00001 19970101  1   11.77
 00002 19970112  5   77.00
 00002 19970112  5   77.00
 00003 19971301  2   20.76
 00004 19970102  2   -3.00
 00005 19970102  x    3.00
 00006 20300102  1    3.00
 00007 19970103  1
"""

REES46 = """event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session
2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,s1
2019-10-01 00:00:05 UTC,purchase,3900821,2053013552326770905,appliances.water_heater,aqua,33.20,554748717,s2
2019-10-01 00:00:06 UTC,cart,3900821,2053013552326770905,appliances.water_heater,aqua,33.20,554748717,s2
2019-10-01 00:00:07 UTC,remove_from_cart,3900821,2053013552326770905,,aqua,33.20,554748717,s2
2019-10-01 00:00:08 UTC,wishlist,3900821,2053013552326770905,,aqua,33.20,554748717,s2
2019-10-01 00:00:09 UTC,purchase,3900821,2053013552326770905,,aqua,-5.00,554748717,s2
2019-10-01 00:00:10 UTC,purchase,3900821,2053013552326770905,,aqua,abc,554748717,s2
2019-10-01 00:00:11 UTC,view,3900821,2053013552326770905,,aqua,33.20,,s3
2019-13-01 00:00:00 UTC,view,3900821,2053013552326770905,,aqua,33.20,554748717,s2
2099-10-01 00:00:00 UTC,view,3900821,2053013552326770905,,aqua,33.20,554748717,s2
2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,s1
"""
REES46_BAD = {5: "event_type", 6: "amount", 7: "amount", 8: "customer_id", 9: "ts", 10: "ts", 11: "event_id"}

RETAILROCKET = """timestamp,visitorid,event,itemid,transactionid
1433221332117,257597,view,355908,
1433224214164,992329,addtocart,248676,
1433222276276,599528,transaction,356475,4000
1433222276276,599528,transaction,15335,4000
1433221332117,257597,view,355908,
abc,1,view,1,
1433221332117,,view,2,
1433221332117,5,click,2,
4102444800000,5,view,2,
"""
RETAILROCKET_BAD = {5: "event_id", 6: "ts", 7: "customer_id", 8: "event_type", 9: "ts"}

UCI = """InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country
536365,85123A,WHITE HANGING HEART,6,12/1/2010 8:26,2.55,17850,United Kingdom
C536379,D,Discount,-1,12/1/2010 9:41,27.50,14527,United Kingdom
536371,22086,PAPER CHAIN,12,2010-12-01 09:00:00,2.95,17850.0,United Kingdom
536365,71053,WHITE METAL LANTERN,6,12/1/2010 8:26,3.39,,United Kingdom
536366,22633,HAND WARMER,6,13/1/2010 8:28,1.85,17850,United Kingdom
536367,22745,POPPY,-2,12/1/2010 8:34,2.10,13047,United Kingdom
A563186,B,Adjust bad debt,1,8/12/2011 14:51,-11062.06,,United Kingdom
536368,22960,JAM,two,12/1/2010 8:34,4.25,13047,United Kingdom
536369,21756,BATH,1,12/1/2010 8:35,x,13047,United Kingdom
536365,85123A,WHITE HANGING HEART,6,12/1/2010 8:26,2.55,17850,United Kingdom
536370,22728,ALARM,24,12/1/2030 8:45,3.75,12583,France
C536380,22,ODD,3,12/1/2010 9:41,1.00,14527,United Kingdom
"""
UCI_BAD = {
    4: "customer_id",
    5: "ts",
    6: "amount",
    7: "amount",
    8: "quantity",
    9: "amount",
    10: "event_id",
    11: "ts",
    12: "amount",
}


def _ingest(tmp_path: Path, fmt: str, name: str, text: str, **kwargs: int) -> IngestReport:
    source = tmp_path / name
    source.write_text(text)
    return ingest_file(fmt, source, get_paths(tmp_path / "home"), now=NOW, **kwargs)


def _check_quarantine(report: IngestReport, bad: dict[int, str]) -> pd.DataFrame:
    """Assert the row accounting and that exactly the expected rows fail on the expected fields."""
    quarantine = pd.read_csv(report.quarantine_path, dtype=str)
    assert report.rows_in == report.accepted + report.quarantined
    assert report.quarantined == len(bad) == len(quarantine)
    assert dict(zip(quarantine["row"].astype(int), quarantine["field"])) == bad
    assert sum(report.reasons.values()) == report.quarantined
    assert len(pd.read_parquet(report.events_path)) == report.accepted
    return quarantine


def _reason(quarantine: pd.DataFrame, row: int) -> str:
    return quarantine.loc[quarantine["row"] == str(row), "reason"].item()


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_canonical_reads_each_file_kind(tmp_path: Path, suffix: str) -> None:
    source = tmp_path / f"events{suffix}"
    {
        ".csv": lambda: CANONICAL.to_csv(source, index=False),
        ".parquet": lambda: CANONICAL.to_parquet(source, index=False),
        ".jsonl": lambda: CANONICAL.to_json(source, orient="records", lines=True),
    }[suffix]()
    report = ingest_file("canonical", source, get_paths(tmp_path / "home"), now=NOW)
    assert (report.rows_in, report.accepted) == (9, 2)
    quarantine = _check_quarantine(report, CANONICAL_BAD)
    assert _reason(quarantine, 2) == "neither customer_id nor anonymous_id is set"
    assert _reason(quarantine, 3).startswith("not a valid timestamp")
    assert _reason(quarantine, 4).startswith("unknown value")
    assert _reason(quarantine, 5) == "must be >= 0"
    assert _reason(quarantine, 7) == "duplicate key"
    assert _reason(quarantine, 8) == "timestamp is in the future"
    assert quarantine["source"].unique().tolist() == [f"canonical:events{suffix}"]
    assert report.events_path == tmp_path / "home" / "raw" / "events" / "canonical-events.parquet"
    assert report.quarantine_path == tmp_path / "home" / "quarantine" / "canonical-events.csv"
    events = pd.read_parquet(report.events_path).set_index("event_id")
    assert events.loc["e1", "amount"] == 10.5
    assert events.loc["e1", "ts"] == pd.Timestamp("2023-05-01T10:00:00Z")
    derived = events.index.drop("e1")
    assert derived.str.match(r"^e[0-9a-f]{16}$").all()
    assert events.loc[derived[0], "anonymous_id"] == "a9"


def test_cdnow_maps_customer_day_purchases(tmp_path: Path) -> None:
    report = _ingest(tmp_path, "cdnow", "cdnow.txt", CDNOW)
    assert (report.rows_in, report.accepted) == (8, 2)
    quarantine = _check_quarantine(report, {3: "event_id", 4: "ts", 5: "amount", 6: "quantity", 7: "ts", 8: "amount"})
    assert _reason(quarantine, 8) == "a purchase needs an amount"
    first = pd.read_parquet(report.events_path).sort_values("ts").iloc[0]
    assert first["customer_id"] == "00001"
    assert first["ts"] == pd.Timestamp("1997-01-01", tz="UTC")
    assert (first["channel"], first["event_type"], first["category"]) == ("web", "purchase", "music")
    assert (first["amount"], first["quantity"]) == (11.77, 1.0)


def test_rees46_maps_events_categories_and_prices(tmp_path: Path) -> None:
    report = _ingest(tmp_path, "rees46", "2019-Oct.csv", REES46)
    assert (report.rows_in, report.accepted) == (11, 4)
    quarantine = _check_quarantine(report, REES46_BAD)
    assert _reason(quarantine, 6) == "must be >= 0"
    assert _reason(quarantine, 7).startswith("not a valid float")
    events = pd.read_parquet(report.events_path).sort_values("ts").reset_index(drop=True)
    assert events["event_type"].tolist() == ["product_view", "purchase", "add_to_cart", "remove_from_cart"]
    assert events["category"].tolist() == [
        "2103807459595387724",
        "appliances.water_heater",
        "appliances.water_heater",
        "2053013552326770905",
    ]
    assert events["amount"].isna().tolist() == [True, False, True, True]
    assert events.loc[1, "amount"] == 33.2
    assert (events.loc[1, "customer_id"], events.loc[1, "session_id"]) == ("554748717", "s2")
    assert events.loc[1, "item_id"] == "3900821"
    assert events.loc[1, "ts"] == pd.Timestamp("2019-10-01 00:00:05", tz="UTC")


def test_retailrocket_maps_visitors_to_customers_and_transactions(tmp_path: Path) -> None:
    report = _ingest(tmp_path, "retailrocket", "events.csv", RETAILROCKET)
    assert (report.rows_in, report.accepted) == (9, 4)
    quarantine = _check_quarantine(report, RETAILROCKET_BAD)
    assert _reason(quarantine, 7) == "neither customer_id nor anonymous_id is set"
    events = pd.read_parquet(report.events_path)
    assert events["anonymous_id"].isna().all()
    assert sorted(events["event_type"]) == ["add_to_cart", "product_view", "purchase", "purchase"]
    purchases = events[events["event_type"] == "purchase"]
    assert purchases["amount"].tolist() == [0.0, 0.0]
    assert set(purchases["session_id"]) == {"4000"}
    assert set(purchases["customer_id"]) == {"599528"}
    assert sorted(purchases["item_id"]) == ["15335", "356475"]
    assert events["amount"].isna().sum() == 2
    view = events[events["event_type"] == "product_view"].iloc[0]
    assert view["ts"] == pd.Timestamp("2015-06-02 05:02:12.117", tz="UTC")


def test_uci_maps_invoices_returns_and_quarantines_odd_lines(tmp_path: Path) -> None:
    report = _ingest(tmp_path, "uci", "Online Retail.csv", UCI)
    assert (report.rows_in, report.accepted) == (12, 3)
    quarantine = _check_quarantine(report, UCI_BAD)
    assert _reason(quarantine, 6) == "must be >= 0"
    assert _reason(quarantine, 5) == (
        "not a valid timestamp: ['13/1/2010 8:28 (expected %m/%d/%Y %H:%M or %Y-%m-%d %H:%M:%S)']"
    )
    assert _reason(quarantine, 9).startswith("not a valid float: ['x']")
    events = pd.read_parquet(report.events_path).set_index("session_id")
    sale = events.loc["536365"]
    assert (sale["event_type"], sale["customer_id"], sale["item_id"]) == ("purchase", "17850", "85123A")
    assert sale["amount"] == pytest.approx(15.3)
    assert sale["ts"] == pd.Timestamp("2010-12-01 08:26", tz="UTC")
    refund = events.loc["C536379"]
    assert (refund["event_type"], refund["amount"], refund["quantity"]) == ("return", 27.5, 1.0)
    assert events.loc["536371", "customer_id"] == "17850"
    assert events.loc["536371", "ts"] == pd.Timestamp("2010-12-01 09:00", tz="UTC")
    assert report.reasons["amount: must be >= 0"] == 3


def test_reasons_histogram_groups_by_field_and_reason(tmp_path: Path) -> None:
    report = _ingest(tmp_path, "rees46", "r.csv", REES46)
    assert report.reasons == {
        "ts: not a valid timestamp": 1,
        "ts: timestamp is in the future": 1,
        "event_type: unknown value": 1,
        "amount: must be >= 0": 1,
        "amount: not a valid float": 1,
        "customer_id: neither customer_id nor anonymous_id is set": 1,
        "event_id: duplicate key": 1,
    }


def test_unknown_format_names_file_and_known_formats(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"x\.csv: unknown format 'nope'") as error:
        _ingest(tmp_path, "nope", "x.csv", REES46)
    assert all(name in str(error.value) for name in FORMATS)


def test_missing_source_columns_name_file_and_columns(tmp_path: Path) -> None:
    text = UCI.replace(",UnitPrice,", ",Price,").replace("CustomerID", "Customer")
    with pytest.raises(ValueError, match=r"bad\.csv: missing column\(s\) UnitPrice, CustomerID"):
        _ingest(tmp_path, "uci", "bad.csv", text)
    assert not any((tmp_path / "home").rglob("*.*"))


def test_reingest_overwrites_without_duplicating(tmp_path: Path) -> None:
    first = _ingest(tmp_path, "retailrocket", "events.csv", RETAILROCKET)
    before = pd.read_parquet(first.events_path)
    second = _ingest(tmp_path, "retailrocket", "events.csv", RETAILROCKET)
    after = pd.read_parquet(second.events_path)
    assert (second.accepted, second.quarantined) == (first.accepted, first.quarantined)
    assert len(after) == len(before) == 4
    assert after["event_id"].tolist() == before["event_id"].tolist()
    assert len(pd.read_csv(second.quarantine_path)) == first.quarantined


def test_chunked_reading_matches_single_pass(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    whole = _ingest(tmp_path / "a", "uci", "u.csv", UCI)
    chunked = _ingest(tmp_path / "b", "uci", "u.csv", UCI, chunk_rows=2)
    assert (chunked.rows_in, chunked.accepted, chunked.quarantined) == (12, 3, 9)
    assert chunked.reasons == whole.reasons
    pd.testing.assert_frame_equal(pd.read_parquet(chunked.events_path), pd.read_parquet(whole.events_path))
    assert pd.read_csv(chunked.quarantine_path)[["row", "field"]].equals(
        pd.read_csv(whole.quarantine_path)[["row", "field"]]
    )


@pytest.mark.skipif(not CDNOW_MASTER.exists(), reason=f"CDNOW master file not found at {CDNOW_MASTER}")
def test_real_cdnow_file(tmp_path: Path) -> None:
    report = ingest_file("cdnow", CDNOW_MASTER, Paths(tmp_path), now=NOW)
    events = pd.read_parquet(report.events_path, columns=["customer_id", "event_id"])
    assert report.rows_in == 69_659
    assert report.rows_in == report.accepted + report.quarantined
    assert events["customer_id"].nunique() == 23_570
    assert events["event_id"].is_unique
    assert report.reasons == {"event_id: duplicate key": report.quarantined}


def test_events_naming_an_unknown_offer_are_quarantined_when_offers_are_known(tmp_path: Path) -> None:
    raw = get_paths(tmp_path / "home").raw
    raw.mkdir(parents=True)
    pd.DataFrame({"offer_id": ["o1"]}).to_parquet(raw / "offers.parquet")
    text = (
        "ts,customer_id,channel,event_type,offer_id\n"
        "2023-12-01T10:00:00Z,c1,web,offer_click,o1\n"
        "2023-12-01T10:01:00Z,c1,web,offer_click,o9\n"
    )
    report = _ingest(tmp_path, "canonical", "offers.csv", text)
    assert (report.rows_in, report.accepted, report.quarantined) == (2, 1, 1)
    assert report.reasons == {"offer_id: unknown offer": 1}
