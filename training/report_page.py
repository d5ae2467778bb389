"""`nbo report`: one self-contained HTML page of a model run (which run, version and date; metrics explained in a
line each; tables; the run's evaluation plots embedded as base64 PNGs; no external CSS, JS or images), built from the
run's `evaluation/` artifacts."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Annotated

import typer

from nbo.config import MODEL_NAME, Paths, get_paths
from training.commands import SHOWN, HomeOption, abort, format_number
from training.html import STYLE, embed_png, html_table

HEADLINE = ("auc", "pr_auc", "log_loss", "ece", "ndcg_at_3", "hit_rate_at_3")
MODEL_COLUMNS = (
    "auc",
    "pr_auc",
    "log_loss",
    "ece",
    "precision_at_3",
    "recall_at_3",
    "ndcg_at_3",
    "hit_rate_at_3",
    "margin_at_3",
)
SEGMENT_COLUMNS = ("auc", "ece", "ndcg_at_3", "hit_rate_at_3")
# One line per number on the page, in the order of its tables.
METRICS_EXPLAINED = {
    "auc": "chance that a random buyer is scored above a random non-buyer (0.5: random, 1: perfect).",
    "pr_auc": "average precision over every threshold; random scores get the positive rate.",
    "log_loss": "mean negative log-likelihood of what happened; lower is better, confident mistakes cost most.",
    "ece": "expected calibration error: mean gap between predicted probability and observed purchase rate, "
    "over equal-count bins; 0 is perfectly calibrated.",
    "precision_at_3": "share of each customer's 3 top-scored categories the customer bought in the horizon.",
    "recall_at_3": "share of the categories each customer bought that are among the 3 top-scored.",
    "ndcg_at_3": "top-3 ranking quality, higher ranks weighing more; 1: the bought categories come first.",
    "hit_rate_at_3": "share of customers who bought in at least one of their 3 top-scored categories.",
    "margin_at_3": "margin earned on the 3 offers ranked first by expected value, against the best 3 in hindsight.",
    "oracle share": "true expected value (the simulator's) of each policy's best offer per customer, against the "
    "best offer for each; random: an offer drawn at random.",
}
PLOTS_EXPLAINED = {
    "feature_importance": "the inputs the trees gained most from.",
    "calibration_curve": "predicted probability against the purchase rate observed: on the diagonal when calibrated.",
    "cumulative_gain": "purchases found when contacting the top-scored share of rows first; random is the diagonal.",
    "segment_metrics": "AUC and NDCG@3 of every model per activity tier and value tier.",
}


@dataclass
class Run:
    """A registered version's run: what names it, its evaluation report and its PNG plots by name."""

    version: str
    run_id: str
    run_name: str
    trained: datetime
    report: dict
    images: dict[str, bytes]


def load_run(paths: Paths, version: str | None) -> Run:
    """A registered version (default: the champion): its run, evaluation report and plots."""
    import mlflow

    from training.registry import connect

    client = connect(paths)
    try:
        found = (
            client.get_model_version(MODEL_NAME, version)
            if version
            else client.get_model_version_by_alias(MODEL_NAME, "champion")
        )
    except mlflow.exceptions.MlflowException as error:
        raise LookupError(
            f"no model {'version ' + version if version else 'champion'} in {paths.tracking_uri}: run `nbo train`"
        ) from error
    run_id = str(found.run_id)
    run = client.get_run(run_id)
    with tempfile.TemporaryDirectory() as folder:
        local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="evaluation", dst_path=folder))
        report = json.loads((local / "report.json").read_text())
        images = {png.stem: png.read_bytes() for png in sorted(local.glob("*.png"))}
    return Run(
        str(found.version),
        run_id,
        run.info.run_name or run_id,
        datetime.fromtimestamp(run.info.start_time / 1000, tz=UTC),
        report,
        images,
    )


def segment_tables(report: dict) -> str:
    """One table per segment kind: tier, size, positive rate and each shown model's metrics."""
    parts = []
    for kind, tiers in report["segments"].items():
        rows = [
            [
                tier,
                str(seg["customers"]),
                f"{seg['positive_rate']:.2%}",
                name,
                *(format_number(seg["models"][name].get(k)) for k in SEGMENT_COLUMNS),
            ]
            for tier, seg in tiers.items()
            for name in SHOWN
        ]
        parts.append(
            f"<h3>per {escape(kind.replace('_', ' '))}</h3>"
            + html_table(["tier", "customers", "positive", "model", *SEGMENT_COLUMNS], rows)
        )
    return "".join(parts)


def explain_metrics() -> str:
    """What each number on the page means, a line each."""
    return (
        "<dl>"
        + "".join(f"<dt>{escape(name)}</dt><dd>{escape(text)}</dd>" for name, text in METRICS_EXPLAINED.items())
        + "</dl>"
    )


def render_html(run: Run, performance: str | None = None) -> str:
    """The page: which run, version and date; headline metrics, what they mean, models side by side, segments,
    oracle share and the plots; a link to the programme's performance page when given."""
    version, report, images = run.version, run.report, run.images
    lightgbm = report["models"]["lightgbm"]
    cards = "".join(f"<span>{escape(k)}<br><b>{format_number(lightgbm.get(k))}</b></span>" for k in HEADLINE)
    models = html_table(
        ["model", *MODEL_COLUMNS],
        [[name, *(format_number(m.get(k)) for k in MODEL_COLUMNS)] for name, m in report["models"].items()],
    )
    oracle = report["oracle"]
    oracle_html = (
        "<p>No simulator truth: no oracle share.</p>"
        if not oracle
        else f"<p>Best offer per customer: {oracle['customers']} customers, {oracle['offers']} valid offers.</p>"
        + html_table(["policy", "share"], [[n, f"{v:.1%}"] for n, v in oracle["share"].items()])
    )
    plots = "".join(
        f"<h3>{escape(name.replace('_', ' '))}</h3><p>{escape(PLOTS_EXPLAINED.get(name, ''))}</p>"
        + embed_png(name, data)
        for name, data in images.items()
    )
    title = f"{MODEL_NAME} v{version}"
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>"
        + (
            f'<p><a href="{escape(performance)}">Programme performance: treatment against the control group</a></p>'
            if performance
            else ""
        )
        + f"<p class=run>Model version {escape(version)}, MLflow run {escape(run.run_name)} "
        f"(<code>{escape(run.run_id)}</code>), trained {run.trained:%Y-%m-%d %H:%M} UTC.</p>"
        f"<p>Test cutoff {escape(report['test_cutoff'][:10])}: {report['customers']} customers, "
        f"{report['rows']} rows, {report['positive_rate']:.2%} positive.</p>"
        f"<h2>Headline (lightgbm)</h2><div class=cards>{cards}</div>"
        f"<h2>What the numbers mean</h2>{explain_metrics()}"
        f"<h2>Models side by side</h2>{models}<h2>Segments</h2>{segment_tables(report)}"
        f"<h2>Share of the oracle's true expected value</h2>{oracle_html}<h2>Plots</h2>{plots}</body></html>"
    )


def write_report(paths: Paths, version: str | None = None, out: Path | None = None) -> Path:
    """Write the HTML report of a version (default: the champion), and beside it the programme's performance page
    (performance.html, linked from it) when the decision log holds decisions; return the report's path."""
    from training.performance import NoDecisions
    from training.performance_page import write_performance_page

    run = load_run(paths, version)
    target = out or paths.home / "reports" / f"report-v{run.version}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        performance = write_performance_page(paths, target.parent / "performance.html").name
    except NoDecisions:
        performance = None
    target.write_text(render_html(run, performance), encoding="utf-8")
    return target


def report(
    version: Annotated[str | None, typer.Option(help="Model version (default: the champion).")] = None,
    out: Annotated[Path | None, typer.Option(help="HTML path (default HOME/reports/).")] = None,
    home: HomeOption = None,
) -> None:
    """Write a self-contained HTML report of a model run: metrics, segments, oracle share, plots."""
    try:
        target = write_report(get_paths(home), version, out)
    except (LookupError, FileNotFoundError) as error:
        abort(str(error))
    typer.echo(f"report written to {target}")
