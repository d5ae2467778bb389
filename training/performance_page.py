"""`nbo performance`: the tables in the terminal (or JSON) and the HTML page with its plots, from
training.performance's report: is the programme working, where, and how much."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from nbo.config import Paths, get_paths
from training.commands import HomeOption, abort
from training.html import STYLE, embed_png, html_table, png
from training.performance import BREAKDOWNS, HORIZON_DAYS, NoDecisions, measure_home

COLUMNS = [
    "",
    "treated",
    "control",
    "revenue / customer T | C",
    "incremental revenue / customer [95 % CI]",
    "incremental revenue [95 % CI]",
    "conversion T | C",
    "incremental conversions [95 % CI]",
]
TITLES = {
    "channel": "per channel (from the first decision there)",
    "offer": "per offer (the model's first choice)",
    "activity_tier": "per activity tier",
    "value_tier": "per value tier",
    "week": "per ISO week (of the first decision)",
}
console = Console()


def format_estimate(found: dict, digits: int = 2, scale: float = 1.0) -> str:
    """value [low, high], or '-' without an estimate."""
    if found["value"] is None:
        return "-"
    value, low, high = (found[k] * scale for k in ("value", "low", "high"))
    return f"{value:,.{digits}f} [{low:,.{digits}f}, {high:,.{digits}f}]"


def format_pair(treated: float | None, control: float | None, pattern: str) -> str:
    """Two means side by side."""
    return " | ".join("-" if v is None else pattern.format(v) for v in (treated, control))


def cell_row(name: str, cell: dict) -> list[str]:
    """One table row of a cell."""
    revenue, converted = cell["revenue"], cell["converted"]
    return [
        name,
        f"{cell['treatment']:,}",
        f"{cell['control']:,}",
        format_pair(revenue["treatment_mean"], revenue["control_mean"], "{:,.2f}"),
        format_estimate(revenue["per_customer"]),
        format_estimate(revenue["incremental"], 0),
        format_pair(converted["treatment_mean"], converted["control_mean"], "{:.1%}"),
        format_estimate(converted["incremental"], 1),
    ]


def describe(report: dict) -> str:
    """The headline in one sentence."""
    overall = report["overall"]
    revenue = overall["revenue"]["incremental"]
    period = f"since {report['since'][:10]}" if report["since"] else "over the whole log"
    head = (
        f"{overall['treatment']:,} treated and {overall['control']:,} control customers {period}, each followed "
        f"for {report['horizon_days']:g} days after their first decision (data until {report['end'][:16]}; "
        f"{report['incomplete']:,} customers whose horizon has not ended yet are left out). "
    )
    if revenue["value"] is None:
        return head + "No estimate: each group needs at least two customers (is NBO_CONTROL_SHARE above 0?)."
    verdict = (
        "significantly positive"
        if revenue["low"] > 0
        else "significantly negative"
        if revenue["high"] < 0
        else "not distinguishable from zero"
    )
    return head + (
        f"Incremental revenue {format_estimate(revenue, 0)} (95 % interval): {verdict}; incremental "
        f"conversions {format_estimate(overall['converted']['incremental'], 1)}."
    )


def estimate_bars(ax, cells: dict[str, dict], title: str) -> None:
    """Incremental revenue per customer with its 95 % interval, one horizontal bar per cell."""
    shown = {
        k: c["revenue"]["per_customer"] for k, c in cells.items() if c["revenue"]["per_customer"]["value"] is not None
    }
    names = list(shown)
    values = [shown[n]["value"] for n in names]
    errors = [
        [v - shown[n]["low"] for n, v in zip(names, values)],
        [shown[n]["high"] - v for n, v in zip(names, values)],
    ]
    ax.barh(range(len(names)), values, xerr=errors, color="#4c72b0", capsize=3)
    ax.set_yticks(range(len(names)), names)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("incremental revenue per customer")


def draw_weeks(report: dict) -> Figure:
    """Per week: revenue per customer of each group, and the incremental revenue per customer with its interval;
    the legend beside the plots."""
    weeks = report["week"]
    names = list(weeks)
    figure = Figure(figsize=(11, 3.8), layout="constrained")
    means, effect = figure.subplots(1, 2)
    x = range(len(names))
    for side, color in (("treatment", "#4c72b0"), ("control", "#dd8452")):
        found = [weeks[n]["revenue"][f"{side}_mean"] for n in names]
        means.plot(x, [float("nan") if v is None else v for v in found], marker="o", color=color, label=side)
    means.set_xticks(list(x), names, rotation=45, fontsize=8)
    means.set_title("revenue per customer within the horizon", fontsize=10)
    figure.legend(loc="outside right upper")
    found = [weeks[n]["revenue"]["per_customer"] for n in names]
    keep = [i for i, f in enumerate(found) if f["value"] is not None]
    effect.errorbar(
        keep,
        [found[i]["value"] for i in keep],
        capsize=3,
        marker="o",
        color="#4c72b0",
        yerr=[
            [found[i]["value"] - found[i]["low"] for i in keep],
            [found[i]["high"] - found[i]["value"] for i in keep],
        ],
    )
    effect.axhline(0, color="black", linewidth=0.8)
    effect.set_xticks(list(x), names, rotation=45, fontsize=8)
    effect.set_title("incremental revenue per customer (95 % interval)", fontsize=10)
    return figure


def plot_where(report: dict, top_offers: int = 10) -> bytes:
    """Incremental revenue per customer per channel, activity tier, value tier and top offers."""
    offers = dict(sorted(report["offer"].items(), key=lambda kv: -kv[1]["treatment"])[:top_offers])
    figure = Figure(figsize=(10, 7))
    axes = figure.subplots(2, 2).ravel()
    for ax, (cells, title) in zip(
        axes,
        [
            (report["channel"], "channel"),
            (report["activity_tier"], "activity tier"),
            (report["value_tier"], "value tier"),
            (offers, f"top {top_offers} offers"),
        ],
    ):
        estimate_bars(ax, cells, title)
    figure.tight_layout()
    return png(figure)


def render_performance_html(report: dict) -> str:
    """The page: headline, method, one table per breakdown, plots (self-contained)."""
    overall = report["overall"]
    cards = "".join(
        f"<span>{escape(label)}<br><b>{escape(value)}</b></span>"
        for label, value in [
            ("incremental revenue", format_estimate(overall["revenue"]["incremental"], 0)),
            ("incremental conversions", format_estimate(overall["converted"]["incremental"], 1)),
            ("treated | control", f"{overall['treatment']:,} | {overall['control']:,}"),
        ]
    )
    tables = "".join(
        f"<h3>{escape(TITLES[kind])}</h3>" + html_table(COLUMNS, [cell_row(k, c) for k, c in report[kind].items()])
        for kind in BREAKDOWNS
    )
    plots = "".join(
        f"<h3>{escape(title)}</h3>" + embed_png(title, data)
        for title, data in [("by week", png(draw_weeks(report))), ("where", plot_where(report))]
    )
    method = (
        "Customers are split by a salted hash of their id into the treatment group and the global control "
        "group, which gets no personalised offer (NBO_CONTROL_POLICY). Each customer counts once, from their "
        "first decision in the period; their revenue and conversion are their purchases within the horizon "
        "after it. Per row: difference of the per-customer means, treatment minus control, with a 95 % "
        "normal-approximation interval (Welch standard error); incremental totals are that difference times "
        "the treated customers."
    )
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>Programme performance</title>'
        f"<style>{STYLE}</style></head><body><h1>Programme performance: treatment against control</h1>"
        f"<p>{escape(describe(report))}</p><div class=cards>{cards}</div><h2>Overall</h2>"
        + html_table(COLUMNS, [cell_row("all customers", overall)])
        + f"<p>{escape(method)}</p><h2>Where</h2>{tables}<h2>Plots</h2>{plots}</body></html>"
    )


def write_performance_page(paths: Paths, out: Path, **options) -> Path:
    """Measure a home and write the page; NoDecisions when there is nothing to measure."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_performance_html(measure_home(paths, **options)), encoding="utf-8")
    return out


def show_tables(report: dict) -> None:
    """The overall row and every breakdown as terminal tables."""
    console.print(describe(report), soft_wrap=True)
    for title, cells in [
        ("overall", {"all customers": report["overall"]}),
        *((TITLES[kind], report[kind]) for kind in BREAKDOWNS),
    ]:
        table = Table(title=title)
        for column in COLUMNS:
            table.add_column(column, justify="right" if column else "left")
        for name, cell in cells.items():
            table.add_row(*cell_row(name, cell))
        console.print(table)


def parse_time(text: str | None, option: str) -> pd.Timestamp | None:
    """An ISO date or time as UTC; a clear ValueError naming the option otherwise."""
    if text is None:
        return None
    try:
        found = pd.Timestamp(text)
    except ValueError:
        raise ValueError(
            f"{option} takes an ISO date or time (2026-11-30 or 2026-11-30T12:00Z), not {text!r}"
        ) from None
    return found.tz_localize("UTC") if found.tz is None else found.tz_convert("UTC")


def performance(
    home: HomeOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    since: Annotated[str | None, typer.Option(help="Count decisions from this date (ISO).")] = None,
    until: Annotated[str | None, typer.Option(help="End of the data (default: the last event).")] = None,
    horizon_days: Annotated[
        float, typer.Option(help="Days of purchases after a customer's first decision.")
    ] = HORIZON_DAYS,
    html: Annotated[Path | None, typer.Option(help="Also write the HTML page there.")] = None,
) -> None:
    """Incremental revenue and conversions of the offers, treatment against the control group, overall and per
    channel, offer, activity and value tier and week, with 95 % intervals."""
    paths = get_paths(home)
    try:
        report = measure_home(paths, horizon_days, parse_time(since, "--since"), parse_time(until, "--until"))
    except (NoDecisions, ValueError, ConnectionError) as error:  # ConnectionError: the shared log's Redis is down
        abort(str(error))
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(render_performance_html(report), encoding="utf-8")
    if as_json:
        print(json.dumps(report))
        return
    show_tables(report)
    if html is not None:
        console.print(f"page written to {html}")
