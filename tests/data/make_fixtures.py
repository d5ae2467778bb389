"""Write the small source files of tests/data with the exact headers and quirks of the public formats.

    .venv/bin/python tests/data/make_fixtures.py

Seeded, so the files it writes are the files committed. Each retailer has about 30 customers who favour one
category and visit every few days for a month: enough for three weekly cutoffs and a model to learn something.
"""

from __future__ import annotations

import csv
import uuid
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CUSTOMERS, DAYS = 30, 31


def visits(
    rng: np.random.Generator, n_categories: int, start: np.datetime64, days: int = DAYS
) -> list[tuple[int, int, np.datetime64]]:
    """(customer, category, time) of each visit: a customer visits every few days, mostly in a favourite category."""
    out = []
    for customer in range(CUSTOMERS):
        favourite = customer % n_categories
        for day in np.flatnonzero(rng.random(days) < 0.2):
            category = favourite if rng.random() < 0.75 else int(rng.integers(n_categories))
            second = int(day) * 86_400 + int(rng.integers(7 * 3600, 22 * 3600))
            out.append((customer, category, start + np.timedelta64(second, "s")))
    return sorted(out, key=lambda v: v[2])


def journey(rng: np.random.Generator) -> list[str]:
    """The steps of one visit: views, then maybe a cart and a purchase."""
    steps = ["view"] * int(rng.integers(1, 3))
    if rng.random() < 0.45:
        steps.append("cart")
        if rng.random() < 0.7:
            steps.append("purchase")
    return steps


def write_rows(path: Path, header: list[str], rows: list[list[object]], encoding: str = "utf-8") -> None:
    with open(path, "w", newline="", encoding=encoding) as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


REES46_CATEGORIES = [  # (category_id, category_code: often empty in the source)
    ("2053013555631882655", "electronics.smartphone"),
    ("2053013563810775923", "appliances.kitchen.washer"),
    ("2103807459595387724", ""),
    ("2053013554658804075", "electronics.audio.headphone"),
    ("2232732093077520756", "construction.tools.light"),
]
REES46_HEADER = [
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
]


def rees46_row(
    rng: np.random.Generator, when: np.datetime64, kind: str, category: int, user: int, session: str
) -> list[object]:
    category_id, code = REES46_CATEGORIES[category]
    product = 1_000_000 + category * 100 + int(rng.integers(4))
    brand = ["samsung", "apple", "", "lg", "xiaomi"][product % 5]
    price = round(20 + (product % 97) * 4.31, 2)
    time = str(when.astype("datetime64[s]")).replace("T", " ") + " UTC"
    return [time, kind, product, category_id, code, brand, f"{price:.2f}", user, session]


def write_rees46() -> None:
    """A month of 2019-Oct.csv, with its exact duplicate rows; and the first 17 minutes of a busy day."""
    rng = np.random.default_rng(46)
    rows = []
    for customer, category, when in visits(rng, len(REES46_CATEGORIES), np.datetime64("2019-10-01T00:00:00")):
        session = str(uuid.UUID(bytes=rng.bytes(16), version=4))
        for step, kind in enumerate(journey(rng)):
            rows.append(
                rees46_row(
                    rng, when + np.timedelta64(40 * step, "s"), kind, category, 512_475_445 + customer * 7, session
                )
            )
    rows += [rows[5], rows[40]]  # the source repeats some rows exactly
    rows.sort(key=lambda r: r[0])
    (HERE / "rees46").mkdir(exist_ok=True)
    write_rows(HERE / "rees46" / "2019-Oct.csv", REES46_HEADER, rows)
    first = []
    for i in range(240):  # 00:00 .. 00:17, many users, each seen once or twice
        when = np.datetime64("2019-10-01T00:00:00") + np.timedelta64(int(i * 4.3), "s")
        kind = "purchase" if i % 23 == 0 else "cart" if i % 9 == 0 else "view"
        first.append(rees46_row(rng, when, kind, i % 5, 540_000_000 + i % 150, f"s-{i % 150}"))
    write_rows(HERE / "rees46" / "2019-Oct-00h00-00h17.csv", REES46_HEADER, first)


def write_retailrocket() -> None:
    """events.csv (epoch ms, anonymous visitors, transactions) and item_properties.csv, whose categoryid changes
    for some items over time, beside properties the adapter leaves (available, 790, 888)."""
    rng = np.random.default_rng(7)
    categories = [1338, 1277, 491, 1051]
    start = np.datetime64("2015-05-03T00:00:00")
    rows, transaction = [], 0
    for customer, category, when in visits(rng, len(categories), start):
        for step, kind in enumerate(journey(rng)):
            item = 100_000 + category * 10 + int(rng.integers(4))
            ms = int((when - np.datetime64("1970-01-01T00:00:00")) / np.timedelta64(1, "ms")) + 35_117 * step
            event = {"view": "view", "cart": "addtocart", "purchase": "transaction"}[kind]
            transaction += kind == "purchase"
            rows.append([ms, 257_597 + customer * 13, event, item, transaction if kind == "purchase" else ""])
    (HERE / "retailrocket").mkdir(exist_ok=True)
    write_rows(
        HERE / "retailrocket" / "events.csv",
        ["timestamp", "visitorid", "event", "itemid", "transactionid"],
        sorted(rows),
    )
    properties = []
    snapshot = [
        int((start + np.timedelta64(7 * w, "D") - np.datetime64("1970-01-01")) / np.timedelta64(1, "ms"))
        + 3 * 3_600_000
        for w in range(-2, 5)
    ]
    for category_index, category in enumerate(categories):
        for k in range(4):
            item = 100_000 + category_index * 10 + k
            if k == 3 and category_index == 3:
                continue  # an item the catalogue never gave a category
            if k == 2:  # moved: a former category first, the current one three weeks later
                properties.append([snapshot[0], item, "categoryid", categories[(category_index + 1) % 4]])
                properties.append([snapshot[3], item, "categoryid", category])
            else:
                properties.append([snapshot[1], item, "categoryid", category])
            properties.append([snapshot[1], item, "available", int(k != 1)])
            properties.append([snapshot[2], item, "790", f"n{(k + 1) * 6000}.000"])
            properties.append([snapshot[4], item, "888", f"1116730 n{k}.000 639502"])
    write_rows(
        HERE / "retailrocket" / "item_properties.csv", ["timestamp", "itemid", "property", "value"], sorted(properties)
    )


UCI_HEADER = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"]
UCI_ITEMS = [  # (stock code, description, category, unit price): four departments
    ("85123A", "WHITE HANGING HEART T-LIGHT HOLDER", "candles", 2.55),
    ("71053", "WHITE METAL LANTERN", "candles", 3.39),
    ("22633", "HAND WARMER UNION JACK", "textiles", 1.85),
    ("84029G", "KNITTED UNION FLAG HOT WATER BOTTLE", "textiles", 3.39),
    ("22086", "PAPER CHAIN KIT 50'S CHRISTMAS", "christmas", 2.95),
    ("21731", "RED TOADSTOOL LED NIGHT LIGHT", "christmas", 1.65),
    ("22960", "JAM MAKING SET WITH JARS", "kitchen", 4.25),
    ("21756", "BATH BUILDING BLOCK WORD", "kitchen", 5.95),
]


def uci_date(when: np.datetime64) -> str:
    """Month/day/year hour:minute without leading zeros, as the source writes them."""
    text = str(when.astype("datetime64[m]"))
    year, month, day = text[:10].split("-")
    hour, minute = text[11:].split(":")
    return f"{int(month)}/{int(day)}/{year} {int(hour)}:{minute}"


def write_uci() -> None:
    """Invoice lines of Online Retail.csv (only purchases: a visit that reaches the basket buys), with
    cancellations, guest lines, free lines and exact duplicates; and the items catalogue a retailer would add."""
    rng = np.random.default_rng(2010)
    rows, invoice = [], 536_365
    by_category = {c: [i for i in UCI_ITEMS if i[2] == c] for c in ("candles", "textiles", "christmas", "kitchen")}
    for customer, category, when in visits(rng, 4, np.datetime64("2010-12-01T00:00:00")):
        if "purchase" not in journey(rng) and rng.random() < 0.5:
            continue
        invoice += 1
        guest = rng.random() < 0.08
        lines = by_category[list(by_category)[category]]
        for code, description, _, price in [lines[i] for i in rng.permutation(len(lines))[: int(rng.integers(1, 3))]]:
            quantity = int(rng.choice([1, 2, 6, 12]))
            rows.append(
                [
                    str(invoice),
                    code,
                    description,
                    quantity,
                    uci_date(when),
                    f"{price:.2f}",
                    "" if guest else str(12_346 + customer * 11),
                    "United Kingdom",
                ]
            )
    sale = rows[10]
    rows.append(
        [
            "C" + str(invoice + 1),
            sale[1],
            sale[2],
            f"-{sale[3]}",
            uci_date(np.datetime64("2010-12-20T10:05")),
            sale[5],
            sale[6],
            sale[7],
        ]
    )  # a cancellation of that sale
    rows.append(
        [str(invoice + 2), "POST", "POSTAGE", 1, uci_date(np.datetime64("2010-12-21T11:00")), "0", rows[3][6], "France"]
    )  # a free line
    rows.append(
        [
            str(invoice + 3),
            "22960",
            "JAM MAKING SET WITH JARS",
            1,
            uci_date(np.datetime64("2010-12-22T09:30")),
            "0.00",
            rows[7][6],
            "United Kingdom",
        ]
    )  # a free gift
    rows += [rows[20], rows[21]]  # exact duplicates, as the source has
    (HERE / "uci").mkdir(exist_ok=True)
    write_rows(HERE / "uci" / "Online Retail.csv", UCI_HEADER, rows)
    write_rows(
        HERE / "uci" / "items.csv",
        ["item_id", "category", "price"],
        [[code, category, price] for code, _, category, price in UCI_ITEMS],
    )


if __name__ == "__main__":
    write_rees46()
    write_retailrocket()
    write_uci()
