"""The HTML report of a trained run: one self-contained page that names its run, explains its numbers, and shows
its tables and plots (legends beside the data, never over it)."""

from __future__ import annotations

import base64
import re
import struct
from html.parser import HTMLParser

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from typer.testing import CliRunner

from features.segments import ACTIVITY_TIERS, VALUE_TIERS
from nbo.cli import app
from training.evaluation_report import draw_figures
from training.registry import connect
from training.report_page import load_run, write_report

PLOTS = {"feature_importance", "calibration_curve", "cumulative_gain", "segment_metrics"}


class Page(HTMLParser):
    """The tables (rows of cell texts), images (alt, data URI), definitions and paragraphs of a page."""

    def __init__(self, html: str):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: dict[str, str] = {}
        self.defined: dict[str, str] = {}
        self.paragraphs: list[str] = []
        self._cell: list[str] | None = None
        self._text: list[str] | None = None
        self._term: str | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th", "dt", "dd", "p"):
            self._text = []
        elif tag == "img":
            self.images[attrs["alt"]] = attrs["src"]

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if self._text is None or tag not in ("td", "th", "dt", "dd", "p"):
            return
        text, self._text = "".join(self._text), None
        if tag in ("td", "th"):
            self.tables[-1][-1].append(text)
        elif tag == "dt":
            self._term = text
        elif tag == "dd":
            self.defined[self._term] = text
        else:
            self.paragraphs.append(text)


def png_size(uri: str) -> tuple[int, int]:
    """Width and height of a base64 PNG data URI (from its header)."""
    data = base64.b64decode(uri.removeprefix("data:image/png;base64,"))
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_the_page_names_its_run_explains_its_numbers_and_shows_tables_and_plots(trained_home, tmp_path):
    paths, result = trained_home
    html = write_report(paths, result["version"], tmp_path / "report.html").read_text()
    page = Page(html)
    run = connect(paths).get_run(connect(paths).get_model_version("nbo-purchase-intent", result["version"]).run_id)
    named = next(p for p in page.paragraphs if p.startswith("Model version"))
    assert f"Model version {result['version']}," in named and run.info.run_id in named
    assert run.info.run_name in named and re.search(r"trained \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", named)
    models = next(t for t in page.tables if t[0][0] == "model")
    assert {row[0] for row in models[1:]} >= {"lightgbm", "popularity", "recency_frequency", "logistic"}
    assert all(re.fullmatch(r"-|\d\.\d{4}", cell) for row in models[1:] for cell in row[1:])
    assert all(column in page.defined and len(page.defined[column].split()) >= 6 for column in models[0][1:])
    assert "oracle share" in page.defined
    tiers = {row[0] for table in page.tables if table[0][0] == "tier" for row in table[1:]}
    assert tiers & {*ACTIVITY_TIERS, *VALUE_TIERS}
    oracle = next(t for t in page.tables if t[0] == ["policy", "share"])
    assert {row[0] for row in oracle[1:]} >= {"lightgbm", "random"}
    assert set(page.images) == PLOTS and all(min(png_size(uri)) >= 300 for uri in page.images.values())
    assert "http" not in re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)


def data_under_legends(figure: Figure) -> list[str]:
    """What a figure's legends cover: points along every plotted line and every bar, in display coordinates (the
    page shows the PNG of this same drawing); and legends reaching outside the figure."""
    FigureCanvasAgg(figure).draw()
    legends = [*figure.legends, *(ax.get_legend() for ax in figure.axes if ax.get_legend() is not None)]
    boxes = [legend.get_window_extent() for legend in legends]
    covered = [
        f"legend {i} outside the figure"
        for i, box in enumerate(boxes)
        if box.x0 < 0 or box.y0 < 0 or box.x1 > figure.bbox.x1 or box.y1 > figure.bbox.y1
    ]
    for ax in figure.axes:
        for line in ax.get_lines():
            corners = ax.transData.transform(line.get_xydata())
            corners = corners[np.isfinite(corners).all(axis=1)]
            steps = np.linspace(0, 1, 25)[:, None, None]
            points = (
                (corners[:-1] + steps * (corners[1:] - corners[:-1])).reshape(-1, 2) if len(corners) > 1 else corners
            )
            covered += [
                f"{ax.get_title()}: line {line.get_label()}"
                for box in boxes
                if ((points >= [box.x0, box.y0]) & (points <= [box.x1, box.y1])).all(axis=1).any()
            ]
        for bar in ax.patches:
            extent = bar.get_window_extent()
            covered += [
                f"{ax.get_title()}: a bar"
                for box in boxes
                if extent.width > 0 and extent.height > 0 and box.overlaps(extent)
            ]
    return covered


def test_the_reports_legends_leave_the_data_visible(trained_home):
    paths, result = trained_home
    figures = draw_figures(load_run(paths, result["version"]).report)
    assert set(figures) == PLOTS
    assert sum(bool(f.legends or any(ax.get_legend() for ax in f.axes)) for f in figures.values()) == 3
    for name, figure in figures.items():
        assert data_under_legends(figure) == [], name


def test_the_legend_check_sees_a_legend_over_the_data():
    figure = Figure(figsize=(4, 3))
    ax = figure.subplots()
    ax.plot([0, 1], [0, 1], label="a diagonal")
    ax.legend(loc="center")
    assert data_under_legends(figure) == [": line a diagonal"]
    figure = Figure(figsize=(4, 3))
    ax = figure.subplots()
    ax.bar([0, 1, 2], [1, 1, 1], label="bars")
    ax.legend(loc="center")
    assert data_under_legends(figure) == [": a bar"]


def test_report_command_writes_the_champion(trained_home, tmp_path):
    paths, _ = trained_home
    out = tmp_path / "champion.html"
    result = CliRunner().invoke(app, ["report", "--out", str(out), "--home", str(paths.home)])
    assert result.exit_code == 0, result.output
    assert out.exists()


def test_report_command_fails_clearly_without_a_model(tmp_path):
    result = CliRunner().invoke(app, ["report", "--version", "99", "--home", str(tmp_path)])
    assert result.exit_code == 2
    assert "no model version 99" in result.output


def test_report_links_the_programme_performance_page_once_decisions_are_logged(trained_home, tmp_path):
    import shutil

    import pandas as pd

    from nbo.config import get_paths
    from serving.decisions import DecisionLog
    from serving.rules import ControlGroup, control_mask
    from training.performance import measure_home
    from training.performance_page import draw_weeks

    source, result = trained_home
    paths = get_paths(tmp_path / "home")  # a copy: the shared home's decision log stays as it is
    shutil.copytree(source.home, paths.home, ignore=shutil.ignore_patterns("decisions.sqlite*", "reports"))
    customers = pd.read_parquet(paths.raw / "customers.parquet")["customer_id"].astype(str).tolist()
    control = control_mask(customers, ControlGroup(share=0.3))
    start = int((pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=30)).timestamp())
    log = DecisionLog(paths.decisions)
    log.record(
        [
            (
                f"d{i}",
                start + i,
                c,
                "web",
                "1",
                0,
                None if held else "o1",
                0,
                0.1,
                1.0,
                1.0,
                0,
                "control" if held else "treatment",
                "o1",
            )
            for i, (c, held) in enumerate(zip(customers, control))
        ]
    )
    log.close()
    html = write_report(paths, result["version"], tmp_path / "reports" / "model.html").read_text()
    assert '<a href="performance.html">' in html
    page = (tmp_path / "reports" / "performance.html").read_text()
    measured = measure_home(paths)
    overall = measured["overall"]
    assert overall["treatment"] + overall["control"] == len(customers) and overall["control"] > 100
    assert f"{overall['treatment']:,} | {overall['control']:,}" in page and "data:image/png;base64," in page
    assert "http" not in re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert data_under_legends(draw_weeks(measured)) == []
