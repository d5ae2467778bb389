"""Commands for people: `nbo evaluate`, `nbo models list|promote|rollback` and what `nbo train` prints (wired into
nbo/cli.py).

Heavy libraries are imported inside the commands so that `nbo --help` stays fast.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from nbo.config import MODEL_NAME, MODELS, get_paths

models_app = typer.Typer(
    help="The registered models (purchase intent, uplift, lifetime value): list, promote a version, roll back.",
    no_args_is_help=True,
)
console = Console()
HomeOption = Annotated[Path | None, typer.Option("--home", help="Data folder (default $NBO_HOME or ./data).")]
SHOWN = ("lightgbm", "popularity", "recency_frequency", "logistic")
ModelOption = Annotated[str, typer.Option("--model", help="Which model: intent, uplift or lifetime.")]


def abort(message: str) -> NoReturn:
    """Print a clear error and exit non-zero."""
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(2)


def evaluate(
    version: Annotated[str | None, typer.Option(help="Model version (default: the champion).")] = None,
    out: Annotated[Path | None, typer.Option(help="JSON report path (default HOME/reports/).")] = None,
    decisions: Annotated[bool, typer.Option(help="Off-policy value of the served decisions instead.")] = False,
    home: HomeOption = None,
) -> None:
    """Evaluate a model against its baselines on the current training set's test cutoff."""
    if decisions:
        show_decision_value(get_paths(home))
        return
    from training.dataset import load_training_set, split_by_time
    from training.evaluation_report import build_report
    from training.registry import connect, load_model

    paths = get_paths(home)
    model = load_model(connect(paths), version=version)
    if model is None:
        abort(f"no model {'version ' + version if version else 'champion'} in {paths.tracking_uri}: run `nbo train`")
    try:
        report = build_report(paths, split_by_time(load_training_set(paths)[0]), model)
    except (ValueError, FileNotFoundError) as error:
        abort(str(error))
    show_report(report)
    out = out or paths.home / "reports" / f"evaluation-v{model.version}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    console.print(f"report written to {out}")


def show_decision_value(paths) -> None:
    """Print the logged policy's value and the greedy policy's IPS / SNIPS estimates from the decision log."""
    from serving.decisions import evaluate_decisions, open_decision_log

    log = open_decision_log(paths)
    try:
        joined = log.joined()
        found = {reward: evaluate_decisions(joined, reward) for reward in ("clicked", "converted")}
    except (ValueError, ConnectionError) as error:  # ConnectionError: the shared log's Redis is down
        abort(str(error))
    finally:
        log.close()
    console.print_json(json.dumps(found))


def show_report(report: dict) -> None:
    """Print the report as tables: scores, rankings, segments and the oracle share."""
    models = report["models"]
    title = (
        f"model v{report['model_version']} on the test cutoff {report['test_cutoff'][:10]}: "
        f"{report['customers']} customers, {report['rows']} rows, {report['positive_rate']:.2%} positive"
    )
    scores = build_table(title, ["model", "AUC", "PR-AUC", "log loss", "ECE"])
    for name, m in models.items():
        scores.add_row(name, *(format_number(m.get(k)) for k in ("auc", "pr_auc", "log_loss", "ece")))
    ranking = build_table(
        "ranking over each customer's categories (customers with a purchase)",
        ["model", "k", "precision", "recall", "NDCG", "hit rate", "margin"],
    )
    for name in SHOWN:
        for k in (1, 3, 5):
            ranking.add_row(
                name,
                str(k),
                *(
                    format_number(models[name][f"{m}_at_{k}"])
                    for m in ("precision", "recall", "ndcg", "hit_rate", "margin")
                ),
            )
    tables = [scores, ranking]
    for kind, tiers in report["segments"].items():
        segments = build_table(
            f"per {kind.replace('_', ' ')}", ["tier", "model", "AUC", "ECE", "NDCG@3", "hit@3"], text=2
        )
        for tier, seg in tiers.items():
            labels = [tier, f"{seg['customers']} customers", f"{seg['positive_rate']:.2%} positive", ""]
            for label, name in zip(labels, SHOWN):
                m = seg["models"][name]
                segments.add_row(
                    label,
                    name,
                    *(format_number(m.get(k)) for k in ("auc", "ece", "ndcg_at_3", "hit_rate_at_3")),
                    end_section=name == SHOWN[-1],
                )
        tables.append(segments)
    for table in tables:
        console.print(table)
    oracle = report["oracle"]
    if oracle:
        share = build_table("share of the oracle's true expected value", ["policy", "share"])
        share.caption = f"best offer per customer: {oracle['customers']} customers, {oracle['offers']} valid offers"
        for name, value in oracle["share"].items():
            share.add_row(name, f"{value:.1%}")
        console.print(share)


@contextmanager
def working(description: str, quiet: bool = False) -> Iterator[None]:
    """A spinner with the time elapsed while a long step runs, then one line with its time; on a terminal only
    (nothing in a log, a pipe or with ``quiet``)."""
    if quiet or not console.is_terminal:
        yield
        return
    began = time.perf_counter()
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True
    ) as progress:
        progress.add_task(description, total=None)
        yield
    console.print(f"[green]done[/] {description} in {time.perf_counter() - began:.1f} s")


def show_training(result: dict) -> None:
    """The trained model against its baselines on the test cutoff (AUC, PR-AUC, NDCG@3, share of the oracle's
    value) and the gate's verdict."""
    from training.evaluation_report import PREFIXES

    metrics = result["metrics"]
    table = build_table(
        f"{MODEL_NAME} v{result['version']} against its baselines on the test cutoff",
        ["model", "AUC", "PR-AUC", "NDCG@3", "oracle share"],
    )
    for name in (*SHOWN, "random"):
        scores = (
            format_number(metrics.get(f"{PREFIXES[name]}_{k}")) if name in PREFIXES else "-"
            for k in ("auc", "pr_auc", "ndcg_at_3")
        )
        share = metrics.get(f"oracle_share_{name}")
        table.add_row(name, *scores, "-" if share is None else f"{share:.1%}")
    table.caption = "oracle share: the simulator's true expected value of each policy's best offer per customer"
    console.print(table)
    console.print(describe_gate(result))


def describe_gate(result: dict) -> str:
    """The gate's verdict in one line: which version is the champion now, and why."""
    version, gate, before = result["version"], result["gate_metric"], result["champion_before"]
    value = result["metrics"][gate]
    if before is None:
        return f"gate ({gate}): no champion before; v{version} ({value:.4f}) is the champion"
    compared = f"v{version} {value:.4f} against champion v{before} {result['champion_metric_before']:.4f}"
    if result["promoted"]:
        return f"gate ({gate}): {compared}: [green]promoted[/], v{version} is the champion"
    return f"gate ({gate}): {compared}: [yellow]not promoted[/], v{before} stays champion, v{version} is challenger"


def show_lifetime(lifetime: dict) -> None:
    """Three lines on the lifetime values: the version and its tiers, the gate's verdict, and how well the
    held-out period was predicted."""
    tiers = ", ".join(f"{tier} {count:,}" for tier, count in lifetime["tiers"].items())
    where = f"written to {lifetime['file']}" if lifetime["promoted"] else "challenger, the champion's tiers stay"
    console.print(
        f"lifetime value of {lifetime['customers']:,} customers: nbo-lifetime-value v{lifetime['version']}, {where} "
        f"(value tiers: {tiers})"
    )
    console.print(f"gate: {lifetime['gate']['reason']}")
    console.print(
        f"held-out period: AUC of buying again {format_number(lifetime['holdout_auc'])}, RMSE of purchases "
        f"{lifetime['holdout_rmse']:.3f}, total purchases {lifetime['holdout_total_error']:+.1%} off"
    )


def build_table(title: str, columns: list[str], text: int = 1) -> Table:
    """A rich table whose first `text` columns hold words and the others numbers (right-aligned)."""
    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i < text else "right")
    return table


def format_number(value: float | None) -> str:
    """Four decimals, or a dash where a metric is undefined."""
    return "-" if value is None else f"{value:.4f}"


def read_model_kind(kind: str) -> str:
    """The registered name of a model kind (intent, uplift, lifetime), or a clear error."""
    if kind not in MODELS:
        abort(f"--model must be one of {', '.join(MODELS)}, not {kind!r}")
    return MODELS[kind]


def describe_models(client) -> dict[str, dict]:
    """Each registered model's champion and challenger versions and champion history, by kind."""
    from training.registry import champion_history, get_alias_version

    return {
        kind: {
            "name": name,
            "champion": get_alias_version(client, "champion", name),
            "challenger": get_alias_version(client, "challenger", name),
            "champion_history": champion_history(client, name),
        }
        for kind, name in MODELS.items()
    }


@models_app.command("list")
def list_models(
    home: HomeOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Each model's aliases and history as JSON.")] = False,
) -> None:
    """Registered purchase-intent versions with their aliases and test metrics, and the champion history; then
    the champion and challenger of every registered model."""
    from training.registry import champion_history, connect

    client = connect(get_paths(home))
    models = describe_models(client)
    if as_json:
        print(json.dumps(models))
        return
    table = build_table(MODEL_NAME, ["version", "aliases", "test AUC", "test ECE", "oracle share", "created"], text=2)
    for listed in sorted(client.search_model_versions(f"name='{MODEL_NAME}'"), key=lambda v: int(v.version)):
        found = client.get_model_version(MODEL_NAME, listed.version)
        metrics = client.get_run(found.run_id).data.metrics if found.run_id else {}
        table.add_row(
            str(found.version),
            ", ".join(found.aliases),
            *(format_number(metrics.get(k)) for k in ("test_auc", "test_ece", "oracle_share_lightgbm")),
            datetime.fromtimestamp(found.creation_timestamp / 1000).isoformat(sep=" ", timespec="minutes"),
        )
    console.print(table)
    console.print(f"champion history: {' -> '.join(champion_history(client)) or 'empty'}")
    aliases = build_table("registered models", ["--model", "name", "champion", "challenger", "history"], text=5)
    for kind, model in models.items():
        aliases.add_row(
            kind,
            model["name"],
            *(f"v{model[a]}" if model[a] else "-" for a in ("champion", "challenger")),
            " -> ".join(model["champion_history"]) or "empty",
        )
    console.print(aliases)


@models_app.command("promote")
def promote_model(version: str, model: ModelOption = "intent", home: HomeOption = None) -> None:
    """Make VERSION the champion (serving picks it up on its next reload; the uplift and lifetime models are
    installed in the home at once)."""
    import mlflow

    from training.champions import FOLDER_MODELS, promote_version
    from training.registry import connect, get_alias_version, promote

    name = read_model_kind(model)
    paths = get_paths(home)
    client = connect(paths)
    before = get_alias_version(client, "champion", name)
    try:
        if model in FOLDER_MODELS:
            promote_version(paths, FOLDER_MODELS[model], version, client)
        else:
            promote(client, version)
    except mlflow.exceptions.MlflowException:
        abort(f"no version {version} of {name}")
    except ValueError as error:  # a version serving could not use
        abort(f"{name} v{version}: {error}")
    console.print(f"{name} champion: v{version} (was {'v' + before if before else 'none'})")


@models_app.command("rollback")
def rollback_model(model: ModelOption = "intent", home: HomeOption = None) -> None:
    """Point champion back at the previous champion."""
    from training.champions import FOLDER_MODELS, roll_back
    from training.registry import connect, get_alias_version, rollback

    name = read_model_kind(model)
    paths = get_paths(home)
    client = connect(paths)
    before = get_alias_version(client, "champion", name)
    try:
        version = roll_back(paths, FOLDER_MODELS[model], client) if model in FOLDER_MODELS else rollback(client)
    except ValueError as error:
        abort(str(error))
    console.print(f"{name} champion: v{version} (was v{before})")
