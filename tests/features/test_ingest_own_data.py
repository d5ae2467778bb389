"""A retailer's own files to a training set: events alone, the tables beside them, cutoffs that fit the span."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.ingest import ingest_file
from features.ingest_catalogue import OFFER_PREFIX, UNCATEGORISED, is_derived
from features.ingest_tables import ingest_table
from features.pipeline import build_features, read_raw
from features.training_set import plan_cutoffs, read_training_set
from nbo.cli import app
from nbo.config import Paths, get_paths

DATA = Path(__file__).resolve().parents[1] / "data"
REES46, REES46_17_MINUTES = DATA / "rees46" / "2019-Oct.csv", DATA / "rees46" / "2019-Oct-00h00-00h17.csv"
ROCKET_EVENTS, ROCKET_ITEMS = DATA / "retailrocket" / "events.csv", DATA / "retailrocket" / "item_properties.csv"
NOW = pd.Timestamp("2024-01-01", tz="UTC")
DAY0 = pd.Timestamp("2019-10-01", tz="UTC")


@pytest.fixture(scope="module")
def rees46_home(tmp_path_factory) -> tuple[Paths, dict]:
    """REES46 events alone, features built with nothing else given."""
    paths = get_paths(tmp_path_factory.mktemp("rees46"))
    ingest_file("rees46", REES46, paths, now=NOW)
    return paths, build_features(paths)


@pytest.mark.parametrize(
    ("days", "given", "planned"),
    [
        (30.5, (None, None), (4, 7)),
        (100, (None, None), (6, 7)),
        (10.2, (None, None), (3, 3)),
        (4.5, (None, None), (3, 1)),
        (30.5, (None, 2), (6, 2)),
        (30.5, (3, None), (3, 7)),
        (50, (2, 7), (2, 7)),
    ],
)
def test_cutoffs_and_horizon_fit_the_span_when_not_given(days, given, planned):
    assert plan_cutoffs(DAY0, DAY0 + pd.Timedelta(days=days), *given) == planned


def test_events_of_17_minutes_get_a_message_with_the_minimum_span_and_the_flags():
    with pytest.raises(ValueError, match=r"span 0 days 00:17:00 .*more than 3 days \(--cutoffs 3 --horizon-days 1\)"):
        plan_cutoffs(DAY0, DAY0 + pd.Timedelta(minutes=17))


def test_cutoffs_given_that_do_not_fit_name_flags_that_do():
    with pytest.raises(
        ValueError,
        match=r"too short for 6 cutoffs 7 days apart, which need more than 42 days; "
        r"pass fewer or closer cutoffs, such as --cutoffs 4 --horizon-days 7",
    ):
        plan_cutoffs(DAY0, DAY0 + pd.Timedelta(days=30.5), 6, 7)


def test_rees46_events_of_17_minutes_are_refused_for_their_span_not_for_missing_items(tmp_path):
    paths = get_paths(tmp_path)
    assert ingest_file("rees46", REES46_17_MINUTES, paths, now=NOW).accepted == 240
    with pytest.raises(ValueError, match=r"span 0 days 00:17:\d\d .*--cutoffs 3 --horizon-days 1"):
        build_features(paths)


def test_rees46_events_alone_give_items_offers_customers_and_a_training_set(rees46_home):
    paths, summary = rees46_home
    source = pd.read_csv(REES46, dtype=str)
    assert (summary["horizon_days"], len(summary["cutoffs"])) == (7, 4)  # a month: 4 weekly cutoffs
    for table in ("items", "offers", "customers"):
        assert is_derived(paths.raw / f"{table}.parquet"), table
    items = read_raw(paths, "items").set_index("item_id")
    assert set(items.index) == set(source["product_id"])
    code = source.set_index("product_id")["category_code"].fillna("")
    category = code.where(code != "", source.set_index("product_id")["category_id"])
    assert items["category"].to_dict() == category.groupby(level=0).last().to_dict()
    bought = source[source["event_type"] == "purchase"].astype({"price": float})
    median = bought.groupby("product_id")["price"].median()
    assert items["price"].dropna().to_dict() == pytest.approx(median.to_dict())  # items never bought: no price
    offers = read_raw(paths, "offers").set_index("category")
    assert (
        sorted(offers.index)
        == sorted(set(category))
        == sorted(read_training_set(paths.training_set).rows["category"].unique())
    )
    bought = bought.assign(category=category.groupby(level=0).last().reindex(bought["product_id"]).to_numpy())
    assert offers["value"].to_dict() == pytest.approx(bought.groupby("category")["price"].median().to_dict())
    assert (offers.index.map(lambda c: OFFER_PREFIX + c) == offers["offer_id"]).all()
    assert offers["channels"].str.split("|").map(lambda c: {"web", "email"} <= set(c)).all()
    assert set(read_raw(paths, "customers")["customer_id"]) == set(source["user_id"])


def test_a_supplied_table_replaces_the_derived_one_and_stays(rees46_home, tmp_path):
    paths = get_paths(tmp_path / "home")
    shutil.copytree(rees46_home[0].home, paths.home)
    offers = tmp_path / "offers.csv"
    offers.write_text("offer_id,category,value,channels,discount\nphones10,electronics.smartphone,12.5,web|email,0.1\n")
    report = ingest_table("offers", "canonical", [offers], paths)
    assert (report.accepted, report.quarantined) == (1, 0)
    assert not is_derived(paths.raw / "offers.parquet")
    build_features(paths)
    assert read_raw(paths, "offers")["offer_id"].tolist() == ["phones10"]
    assert is_derived(paths.raw / "items.parquet")  # the others are still derived, again


def test_retailrocket_item_properties_give_the_latest_category_to_items_and_their_events(tmp_path):
    paths = get_paths(tmp_path)
    ingest_file("retailrocket", ROCKET_EVENTS, paths, now=NOW)
    report = ingest_table("items", "retailrocket", [ROCKET_ITEMS], paths)
    properties = pd.read_csv(ROCKET_ITEMS, dtype=str)
    categoryid = properties[properties["property"] == "categoryid"]
    assert report.rows_in == len(properties) == report.accepted + report.ignored + report.superseded
    assert report.ignored == len(properties) - len(categoryid)
    assert report.superseded == categoryid["itemid"].duplicated().sum() > 0
    items = read_raw(paths, "items").set_index("item_id")["category"]
    latest = categoryid.astype({"timestamp": int}).sort_values("timestamp").groupby("itemid")["value"].last()
    assert items.to_dict() == latest.to_dict()
    summary = build_features(paths)
    rows = read_training_set(paths.training_set).rows
    assert sorted(rows["category"].unique()) == sorted(latest.unique())
    assert summary["positives"] > 0
    assert not is_derived(paths.raw / "items.parquet") and is_derived(paths.raw / "offers.parquet")


def test_items_without_any_category_fall_in_one(tmp_path):
    paths = get_paths(tmp_path)
    ingest_file("retailrocket", ROCKET_EVENTS, paths, now=NOW)
    build_features(paths)
    assert set(read_raw(paths, "items")["category"]) == {UNCATEGORISED}
    assert read_raw(paths, "offers")["offer_id"].tolist() == [OFFER_PREFIX + UNCATEGORISED]


def test_table_rows_are_validated_and_quarantined_with_file_row_column_and_reason(tmp_path):
    paths = get_paths(tmp_path)
    part1, part2 = tmp_path / "offers-1.csv", tmp_path / "offers-2.csv"
    part1.write_text(
        "offer_id,category,value,channels,valid_from\n"
        "o1,shoes,5,web|email,2024-01-01\n"
        "o2,shoes,,web,\n"
        "o3,bags,3,web|fax,\n"
        "o4,bags,-1,web,\n"
    )
    part2.write_text("offer_id,category,value,channels,valid_from\no5,bags,2,app,soon\no1,shoes,5,web,\n")
    report = ingest_table("offers", "canonical", [part1, part2], paths)
    quarantine = pd.read_csv(report.quarantine_path, dtype=str)
    assert (report.rows_in, report.accepted, report.quarantined) == (6, 1, 5)
    assert quarantine[["source", "row", "field"]].values.tolist() == [
        ["canonical:offers-1.csv", "2", "value"],
        ["canonical:offers-1.csv", "3", "channels"],
        ["canonical:offers-1.csv", "4", "value"],
        ["canonical:offers-2.csv", "1", "valid_from"],
        ["canonical:offers-2.csv", "2", "offer_id"],
    ]
    unknown = "unknown channel (known: web, app, email, store, call_center, sms)"
    assert quarantine["reason"].tolist()[:3] == ["required value is missing", unknown, "must be >= 0"]
    assert report.first_rejected == "canonical:offers-1.csv row 2, column value: required value is missing"
    assert read_raw(paths, "offers")["offer_id"].tolist() == ["o1"]


def test_customer_attributes_beyond_the_schema_are_kept_and_typed(tmp_path):
    source = tmp_path / "customers.csv"
    source.write_text(
        "customer_id,email_opt_in,recency,channel,newbie\nc1,yes,10,Web,1\nc2,no,3,Phone,0\nc3,maybe,1,Web,1\n"
    )
    report = ingest_table("customers", "canonical", [source], get_paths(tmp_path))
    customers = pd.read_parquet(report.table_path)
    assert report.first_rejected == "canonical:customers.csv row 3, column email_opt_in: not a valid bool: ['maybe']"
    assert customers["customer_id"].tolist() == ["c1", "c2"]
    assert customers["email_opt_in"].tolist() == [True, False]
    assert customers["recency"].tolist() == [10.0, 3.0] and customers["channel"].tolist() == ["Web", "Phone"]


def test_a_table_with_no_good_row_is_refused_and_the_previous_one_kept(tmp_path):
    paths = get_paths(tmp_path)
    good, bad = tmp_path / "items.csv", tmp_path / "items-bad.csv"
    good.write_text("item_id,category,price\ni1,shoes,10\n")
    bad.write_text("item_id,category,price\ni1,,10\ni2,bags,-3\n")
    ingest_table("items", "canonical", [good], paths)
    with pytest.raises(
        ValueError,
        match=r"items-bad\.csv: no items row accepted of 2 read \(format 'canonical'\); first "
        r"rejected: canonical:items-bad\.csv row 1, column category: required value",
    ):
        ingest_table("items", "canonical", [bad], paths)
    assert read_raw(paths, "items")["item_id"].tolist() == ["i1"]
    assert sorted(p.name for p in tmp_path.rglob("*.tmp")) == []
    with pytest.raises(
        ValueError,
        match=r"items\.csv: missing column\(s\) timestamp, itemid, property, value required by table "
        r"'items' in format 'retailrocket'",
    ):
        ingest_table("items", "retailrocket", [good], paths)
    with pytest.raises(ValueError, match=r"no format 'uci' for table 'items' \(formats: canonical, retailrocket\)"):
        ingest_table("items", "uci", [good], paths)


def test_derived_offers_do_not_restrict_the_offers_events_may_name(rees46_home, tmp_path):
    paths = get_paths(tmp_path / "home")
    paths.raw.mkdir(parents=True)
    shutil.copy(rees46_home[0].raw / "offers.parquet", paths.raw)  # derived: one offer per category
    events = tmp_path / "events.csv"
    events.write_text("ts,customer_id,channel,event_type,offer_id\n2023-12-01T10:00:00Z,c1,web,offer_click,o9\n")
    assert ingest_file("canonical", events, paths, now=NOW).accepted == 1


def test_a_broken_line_names_the_file_and_line_and_writes_nothing(tmp_path):
    lines = REES46.read_text().splitlines()
    lines[5] += ",extra,cells"  # line 6 of the file: two fields too many
    source = tmp_path / "2019-Oct.csv"
    source.write_text("\n".join(lines) + "\n")
    home = get_paths(tmp_path / "home")
    with pytest.raises(ValueError, match=r"2019-Oct\.csv: not readable as ','-separated text: .*line 6"):
        ingest_file("rees46", source, home, now=NOW, chunk_rows=2)  # the first chunks were already written
    assert [p for p in home.home.rglob("*") if p.is_file()] == []


def test_text_in_another_encoding_names_the_line_and_the_flag(tmp_path):
    source = tmp_path / "Online Retail.csv"
    text = (DATA / "uci" / "Online Retail.csv").read_text().splitlines()
    text[3] = text[3].replace("United Kingdom", "Réunion")
    source.write_bytes(("\n".join(text) + "\n").encode("latin-1"))
    with pytest.raises(ValueError, match=r"Online Retail\.csv: line 4 is not utf-8 text .*--encoding latin-1"):
        ingest_file("uci", source, get_paths(tmp_path / "home"), now=NOW)
    assert ingest_file("uci", source, get_paths(tmp_path / "home"), now=NOW, encoding="latin-1").accepted > 100


def test_a_file_none_of_whose_rows_is_accepted_changes_nothing(tmp_path):
    home = get_paths(tmp_path / "home")
    good = ingest_file("rees46", REES46, home, now=NOW)
    before = pd.read_parquet(good.events_path)
    source = tmp_path / "2019-Oct.csv"  # the same name: it would replace the good file's events
    source.write_text(REES46.read_text().replace(" UTC,", ","))
    rows = len(REES46.read_text().splitlines()) - 1
    with pytest.raises(
        ValueError,
        match=rf"2019-Oct\.csv: none of its {rows} rows was accepted as format 'rees46'; "
        r"first rejected: rees46:2019-Oct\.csv row 1, column ts: not a valid "
        r"timestamp: .*expected %Y-%m-%d %H:%M:%S UTC",
    ):
        ingest_file("rees46", source, home, now=NOW)
    pd.testing.assert_frame_equal(pd.read_parquet(good.events_path), before)
    assert len(pd.read_csv(good.quarantine_path)) == good.quarantined
    assert list(home.home.rglob("*.tmp")) == []


def test_nbo_ingest_names_the_first_rejected_row_and_fails_on_a_bad_file(tmp_path):
    runner, home = CliRunner(), str(tmp_path / "home")
    said = runner.invoke(app, ["ingest", "--format", "rees46", str(REES46), "--home", home])
    assert said.exit_code == 0 and "2 rows quarantined" in said.output
    assert "first: rees46:2019-Oct.csv row 7, column event_id: duplicate key" in " ".join(said.output.split())
    source = tmp_path / "items.csv"
    source.write_text("item_id,category\ni1,\n")
    said = runner.invoke(app, ["ingest", "--table", "items", str(source), "--home", home])
    assert said.exit_code == 2
    assert "row 1, column category: required value is missing" in " ".join(said.output.split())
