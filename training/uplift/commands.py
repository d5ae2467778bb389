"""`nbo uplift train` and `nbo campaign`: learn offer uplift from exposure logs, report it, log it to MLflow,
and pick the best offer per customer under a contact budget."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from features.privacy import drop_opted_out
from nbo.config import get_paths
from serving.rules import control_group_from_env
from training.champions import UPLIFT, require_champion
from training.exposures import HORIZON_DAYS, exposures_from_log
from training.lifetime.values import read_tiers
from training.uplift.campaign import compile_predictors, leave_out_control, score_best_offers
from training.uplift.campaign_dask import CampaignSpec, open_client, plan_campaign_dask
from training.uplift.evaluate import BASELINES
from training.uplift.guard import choose_campaign, write_why
from training.uplift.learners import LEARNERS
from training.uplift.model import join_customers, load_uplift
from training.uplift.train import GATE_METRIC, UPLIFT_FOLDER, train_uplift

__all__ = ["GATE_METRIC", "campaign", "train_uplift", "uplift_app"]
uplift_app = typer.Typer(help="Incremental effect of offers (uplift) from exposure logs.", no_args_is_help=True)
console = Console()
Home = Annotated[Path | None, typer.Option(help="Data folder (default $NBO_HOME or ./data).")]


def read_table(path: Path) -> pd.DataFrame:
    """A parquet or CSV table."""
    if not path.exists():
        raise FileNotFoundError(f"no file {path}")
    return pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)


def read_optional(path: Path | None) -> pd.DataFrame | None:
    """A table when the path is given and exists, else None."""
    return read_table(path) if path is not None and path.exists() else None


def format_interval(found: dict[str, float], scale: float = 1.0) -> str:
    """value [low, high], scaled."""
    return f"{found['value'] * scale:.3f} [{found['low'] * scale:.3f}, {found['high'] * scale:.3f}]"


def show_report(report: dict) -> None:
    """The ranking and policy tables of a training report."""
    metrics, params = report["metrics"], report["params"]
    ranking = Table(title=f"held-out ranking ({params['test_rows']:,} rows, outcome {params['outcome']}, x100)")
    ranking.add_column("metric")
    ranking.add_column("value [95% CI]")
    for name in [n for n in metrics if n == "qini" or n.startswith(("uplift_", "true_uplift"))]:
        ranking.add_row(name, format_interval(metrics[name], 1.0 if name == "true_uplift_corr" else 100.0))
    console.print(ranking)
    policies = Table(title=f"incremental {params['outcome']} per row x100, budget {params['budget']:.0%}")
    for column in ("policy", "IPS", "SNIPS", "DR", "true"):
        policies.add_column(column)
    rows = [(name, name) for name in ("model", "random", "best_single_offer", "oracle")]
    rows += [(f"model - {b.replace('_', ' ')}", f"model_gain_over_{b}") for b in BASELINES]
    for label, name in rows:
        cells = [
            format_interval(metrics[f"{name}_{k}"], 100) if f"{name}_{k}" in metrics else "-"
            for k in ("ips", "snips", "dr", "true")
        ]
        if any(c != "-" for c in cells):
            policies.add_row(label, *cells)
    console.print(policies)


@uplift_app.command("train")
def train_command(
    outcome: str = "converted",
    customers: Annotated[Path | None, typer.Option(help="Customers table (default raw).")] = None,
    exposures: Annotated[Path | None, typer.Option(help="Exposures table (default raw).")] = None,
    offers: Annotated[Path | None, typer.Option(help="Offers table (default raw, optional).")] = None,
    behaviour: Annotated[Path | None, typer.Option(help="Behavioural features by customer_id.")] = None,
    split: Annotated[
        str, typer.Option(help="time (last campaigns; a log with one campaign date is split by customer) or customer.")
    ] = "time",
    holdout: Annotated[
        float, typer.Option(help="Share held out to evaluate (0: none; the published model is refitted on every row).")
    ] = 0.25,
    budget: float = 0.3,
    bootstraps: int = 100,
    learner: Annotated[
        list[str] | None,
        typer.Option(
            help=f"Candidate learners ({', '.join(LEARNERS)}; "
            "repeatable; default all, chosen by "
            "cross-validated policy value)."
        ),
    ] = None,
    from_log: Annotated[
        bool,
        typer.Option(
            help="Learn from the decision log's served offers and control slots instead of an exposures table."
        ),
    ] = False,
    horizon_days: Annotated[
        int, typer.Option(min=1, help="Outcome window after a decision (--from-log).")
    ] = HORIZON_DAYS,
    gate: Annotated[
        bool,
        typer.Option(
            help="Champion only when it is at least the champion on the same held-out rows: its offer lifts' "
            "log-likelihood, else its Qini (--no-gate: champion in any case; `nbo models rollback --model uplift` "
            "undoes it)."
        ),
    ] = True,
    home: Home = None,
) -> None:
    """Learn each offer's uplift, report it on the held-out split and keep the model for `nbo campaign`."""
    paths = get_paths(home)
    exposures_path = exposures or paths.raw / "exposures.parquet"
    try:
        logged = exposures_from_log(paths, horizon_days) if from_log else read_table(exposures_path)
        if from_log and logged.empty:
            raise ValueError(
                f"the decision log {paths.decisions} holds no decisions yet: serve offers first, or "
                "learn from an exposures table (--exposures)"
            )
        report = train_uplift(
            paths,
            read_table(customers or paths.raw / "customers.parquet"),
            logged,
            read_optional(offers or paths.raw / "offers.parquet"),
            outcome,
            read_optional(behaviour),
            split,
            holdout,
            budget,
            paths.raw if from_log else exposures_path.parent,
            bootstraps,
            learners=tuple(learner or LEARNERS),
            gate=gate,
        )
    except (ValueError, FileNotFoundError, ConnectionError) as error:  # ConnectionError: the shared log's Redis
        console.print(f"[bold red]error:[/] {error}")
        raise typer.Exit(2) from error
    params = report["params"]
    if params["split"] != params["split_asked"]:
        console.print(
            f"the log has one campaign date: held out {params['holdout']:.0%} of customers instead (--split customer)"
        )
    if report["metrics"]:
        show_report(report)
    values = ", ".join(f"{name} {value * 100:.3f}" for name, value in report["cv_policy_value"].items())
    console.print(
        f"learner: {params['learner']}"
        + (f" (cross-validated policy value x100: {values})" if values else "")
        + f"; final model refitted on all {params['final_rows']:,} rows"
    )
    console.print(
        f"campaigns target by: {params['targeting'].replace('_', ' ')} "
        f"({report['targeting']['rows']:,} rows of evidence): {report['targeting']['reason']}"
    )
    role = "champion" if report["promoted"] else "challenger"
    if report["gate"]:
        console.print(f"gate ({report['gate']['metric']}): {report['gate']['reason']}")
    console.print(f"model: nbo-uplift v{report['version']} ({role})   run {report['run_id']} ({report['seconds']} s)")


@contextmanager
def scoring_bar(unit: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar of scoring, and the (done, total) callback that moves it."""
    with Progress(
        TextColumn(f"scoring {unit}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("scoring", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def parts_folder(target: Path) -> Path:
    """Where `nbo campaign --dask` writes its scored parts: beside the campaign file."""
    return target.with_name(f"{target.stem}-parts")


def campaign(
    budget: Annotated[float, typer.Option(help="Fraction of eligible customers to contact.")],
    segment: Annotated[list[str] | None, typer.Option(help="column=value filter, repeatable.")] = None,
    channel: str = "email",
    out: Path | None = None,
    now: Annotated[str | None, typer.Option(help="Send time (default: now, UTC).")] = None,
    customers: Path | None = None,
    offers: Path | None = None,
    behaviour: Annotated[
        Path | None,
        typer.Option(help="Customer columns to join and filter on (default: the home's activity and value tiers)."),
    ] = None,
    compiled: Annotated[
        bool,
        typer.Option(
            help="Score with the boosters compiled by lleaves (extra 'compiled'): about 5x faster, equal to ~1e-15."
        ),
    ] = False,
    dask: Annotated[
        bool,
        typer.Option(
            help="Score in customer partitions on a Dask cluster (a local one, one worker per core, unless "
            "--scheduler); each partition's best offers are written to <out>-parts/ as a Parquet part."
        ),
    ] = False,
    scheduler: Annotated[
        str | None, typer.Option(help="Address of the dask.distributed scheduler to score on (implies --dask).")
    ] = None,
    home: Home = None,
) -> None:
    """Write the best offer per customer under a contact budget (positive expected incremental value only)."""
    paths = get_paths(home)
    try:
        rules = dict(rule.split("=", 1) for rule in segment or [])
        model = load_uplift(require_champion(paths, UPLIFT))  # the registry's champion, installed at HOME/uplift
        tiers = read_optional(behaviour) if behaviour is not None else read_tiers(paths)
        table = read_table(offers or paths.raw / "offers.parquet")
        when = pd.Timestamp(now) if now else pd.Timestamp.now(tz="UTC")
        when = when.tz_localize("UTC") if when.tz is None else when.tz_convert("UTC")
        source, target = customers or paths.raw / "customers.parquet", out or paths.home / "campaign.parquet"
        began = time.perf_counter()
        if (dask or scheduler) and compiled:
            raise ValueError("--compiled scores in this process only: leave out --dask and --scheduler")
        if dask or scheduler:
            spec = CampaignSpec(paths.home, model, table, tiers, channel, when, rules, control_group_from_env())
            with open_client(scheduler) as client, scoring_bar("partitions") as report:
                chosen, eligible, held_out, sent, targeting, parts = plan_campaign_dask(
                    client, spec, [source], budget, parts_folder(target), report
                )
            console.print(f"scored parts: {parts_folder(target)} ({len(parts)} parts)")
        else:
            people = drop_opted_out(paths, join_customers(read_table(source), tiers))
            predictors = compile_predictors(paths.home / "uplift") if compiled else None
            with scoring_bar("pairs") as report:
                best, eligible = score_best_offers(model, people, table, channel, when, rules, report, predictors)
            best, eligible, held_out = leave_out_control(best, eligible, control_group_from_env())
            chosen, sent, targeting = choose_campaign(
                paths.home / UPLIFT_FOLDER, model, best, table, channel, when, budget, eligible
            )
    except (ValueError, FileNotFoundError) as error:
        console.print(f"[bold red]error:[/] {error}")
        raise typer.Exit(2) from error
    seconds = time.perf_counter() - began
    chosen.to_csv(target, index=False) if target.suffix == ".csv" else chosen.to_parquet(target, index=False)
    why = write_why(target, targeting, sent, len(chosen))
    console.print(f"{sent}: {targeting['reason']} (-> {why})")
    console.print(
        f"{len(chosen):,} of {eligible:,} eligible customers selected "
        f"(expected incremental value {chosen['expected_value'].sum():,.1f}) -> {target}; "
        f"{held_out:,} eligible customers of the control group left out; "
        f"scored {(eligible + held_out) / max(seconds, 1e-9):,.0f} customers/s"
    )
