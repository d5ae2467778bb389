"""`nbo`: one verb per lifecycle step, from raw events to offers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from nbo.config import MODEL_NAME, get_paths
from training.commands import evaluate, models_app
from training.performance_page import performance
from training.report_page import report
from training.uplift.commands import campaign, uplift_app

app = typer.Typer(help="Predictive next-best-offer service.", no_args_is_help=True, add_completion=False)
app.add_typer(models_app, name="models")
app.command()(evaluate)
app.command()(report)
app.command()(performance)
app.add_typer(uplift_app, name="uplift")
app.command()(campaign)
console = Console()
Home = Annotated[Path | None, typer.Option(help="Data folder (default $NBO_HOME or ./data).")]


def fail(message: str) -> NoReturn:
    """Print a clear error and exit non-zero."""
    console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def generate(
    customers: Annotated[int | None, typer.Option(help="Customers (default 3,000; experiment 30,000).")] = None,
    days: int = 180,
    seed: int = 42,
    start: Annotated[str | None, typer.Option(help="First day (default: DAYS before today).")] = None,
    home: Home = None,
    setting: Annotated[
        str,
        typer.Option(
            help="retailer (events, catalogue, offers) or experiment (a "
            "randomised two-version e-mail test, one send date)."
        ),
    ] = "retailer",
) -> None:
    """Simulate an omnichannel retailer's events, catalogue and offers (or an e-mail experiment) into the data
    folder."""
    from simulator.experiment import simulate_experiment
    from simulator.generate import simulate

    paths = get_paths(home)
    start = start or (pd.Timestamp.now(tz="UTC").normalize() - pd.Timedelta(days=days)).date().isoformat()
    if setting not in ("retailer", "experiment"):
        fail(f"--setting must be 'retailer' or 'experiment', got {setting!r}")
    summary = (
        simulate_experiment(paths.raw, customers or 30_000, seed, start)
        if setting == "experiment"
        else simulate(paths.raw, customers or 3000, days, seed, start=start, progress=True)
    )
    console.print_json(json.dumps(summary, default=str))


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Source files (a table may come in parts).")],
    format: Annotated[
        str,
        typer.Option(
            "--format", help="Source format: canonical, cdnow, rees46, retailrocket or uci (docs/own-data.md)."
        ),
    ] = "canonical",
    table: Annotated[
        str,
        typer.Option(
            help="events, or items, offers or customers (without them `nbo features` derives them from the events)."
        ),
    ] = "events",
    encoding: Annotated[str, typer.Option(help="Text encoding of the files.")] = "utf-8",
    home: Home = None,
) -> None:
    """Validate and load source files; rejected rows go to the quarantine folder with their row, column and
    reason, and a file none of whose rows is accepted changes nothing."""
    from features.ingest import ingest_file
    from features.ingest_tables import ingest_table

    try:
        reports: list[Any]  # IngestReport or TableReport: both print themselves and name their first rejected row
        if table != "events":
            reports = [ingest_table(table, format, paths, get_paths(home), encoding)]
        else:
            reports = [ingest_file(format, path, get_paths(home), encoding=encoding) for path in paths]
    except (ValueError, FileNotFoundError) as error:
        fail(str(error))
    for ingested in reports:
        console.print(ingested)
        if ingested.first_rejected:
            console.print(
                f"[yellow]{ingested.quarantined:,} rows quarantined[/] to {ingested.quarantine_path}; "
                f"first: {ingested.first_rejected}",
                soft_wrap=True,
            )


@app.command()
def features(
    cutoffs: Annotated[
        int | None, typer.Option(min=1, help="Cutoffs (default: 6, or as many as the events' span allows, 3 at least).")
    ] = None,
    horizon_days: Annotated[
        int | None,
        typer.Option(min=1, help="Days between cutoffs and of the label window (default: 7, or less to fit the span)."),
    ] = None,
    home: Home = None,
    dask: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Build the training set on Dask: a local cluster of this many worker processes (or the scheduler "
            "at --scheduler), from the raw event files; the online store is left as it is.",
        ),
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Address of a dask.distributed scheduler to build on (with --dask).")
    ] = None,
    worker_memory: Annotated[
        str, typer.Option(help="Memory limit of each local Dask worker (e.g. 6GiB; auto: the machine's share).")
    ] = "auto",
) -> None:
    """Build the point-in-time training set and load the online store; items, offers and customers not ingested
    are derived from the events."""
    from features.pipeline import build_features
    from training.commands import working

    try:
        if dask or scheduler:
            from features.distributed import build_features_dask, connect_cluster

            with working("building the training set on Dask"), connect_cluster(dask or 1, scheduler, worker_memory):
                summary = build_features_dask(get_paths(home), cutoffs, horizon_days)
        else:
            with working("building the training set and loading the online store"):
                summary = build_features(get_paths(home), cutoffs, horizon_days)
    except (ValueError, FileNotFoundError) as error:
        fail(str(error))
    console.print_json(json.dumps(summary, default=str))


@app.command()
def compact(home: Home = None) -> None:
    """Compact the event lake's segments into its day partitions and expire old ones (`nbo features` does it too)."""
    from features.lake import compact_lake

    try:
        summary = compact_lake(get_paths(home))
    except ValueError as error:  # a bad $NBO_LAKE_RETENTION_DAYS
        fail(str(error))
    console.print_json(json.dumps(summary))


@app.command()
def train(
    home: Home = None,
    gate_metric: Annotated[
        str,
        typer.Option(
            envvar="NBO_GATE_METRIC",
            help=(
                "Metric a new model must beat the champion on, both scored on the same test rows: test_auc, "
                "test_pr_auc, test_log_loss, test_ece, test_{precision,recall,ndcg,hit_rate}_at_{1,3,5}."
            ),
        ),
    ] = "test_auc",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result and every metric as JSON.")] = False,
    sample: Annotated[
        float | None,
        typer.Option(
            help="Share of the training and validation negatives to keep (every positive is kept, kept negatives "
            "weigh 1/share; the test cutoff stays whole). Default: all that fit $NBO_TRAIN_MEMORY_GIB.",
        ),
    ] = None,
) -> None:
    """Train, evaluate and register a model (champion if it beats the current one), then lifetime value."""
    from training.commands import show_lifetime, show_training, working
    from training.lifetime.values import fit_lifetime
    from training.train import train as train_model

    paths = get_paths(home)
    try:
        with working("training, evaluating and registering the purchase-intent model", as_json):
            result = train_model(paths, gate_metric, sample_rate=sample)
    except (ValueError, FileNotFoundError) as error:
        fail(str(error))
    if not as_json:
        show_training(result)
    try:
        with working("fitting lifetime value", as_json):
            result["lifetime"] = fit_lifetime(paths)
    except ValueError as error:  # the lifetime champion's tiers, if any, stay
        result["lifetime"] = {"error": str(error)}
        if not as_json:
            kept = "the lifetime champion's" if paths.lifetime.exists() else "365-day revenue"
            console.print(f"[yellow]warning:[/] no new lifetime value, value tiers stay on {kept}: {error}")
    if as_json:
        print(json.dumps(result, default=str))
    elif "error" not in result["lifetime"]:
        show_lifetime(result["lifetime"])


@app.command()
def retrain(
    home: Home = None,
    cutoffs: int = 6,
    horizon_days: int = 7,
    gate_metric: Annotated[
        str, typer.Option(envvar="NBO_GATE_METRIC", help="The purchase-intent gate (see `nbo train`).")
    ] = "test_auc",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Everything accumulated (lake, ingested sources, decision log) to gated champions of every model; safe
    while the service serves. Exit 1 when a step failed (its previous output keeps serving), 2 when another
    retrain of the home is running."""
    from training.retrain import RetrainRunning
    from training.retrain import retrain as retrain_home

    try:
        report = retrain_home(get_paths(home), cutoffs, horizon_days, gate_metric)
    except RetrainRunning as error:
        fail(str(error))
    if as_json:
        print(json.dumps(report, default=str))
    else:
        table = Table(title=f"retrain in {report['seconds']:.1f} s (MLflow run {report['run_id']})")
        for column in ("step", "verdict", "seconds", "detail"):
            table.add_column(column)
        for name, step in report["steps"].items():
            detail = step.get("error") or step.get("reason") or step.get("source") or ""
            if "value" in step:
                detail = f"{step.get('gate_metric')} {step['value']:.4f} " + detail
            table.add_row(name, step["status"], f"{step['seconds']:.1f}", detail)
        console.print(table)
    if not report["ok"]:
        raise typer.Exit(1)


@app.command()
def serve(
    port: int = 3000,
    home: Home = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Worker processes (default $NBO_WORKERS or 1; one per core for throughput)."),
    ] = None,
) -> None:
    """Run the BentoML service in the foreground on the champion model."""
    from serving.process import explain_missing, missing_to_serve, serve_command

    paths = get_paths(home)
    missing = missing_to_serve(paths)
    if missing and missing != ["model"]:
        fail(explain_missing(paths, missing))
    if missing:
        console.print(
            f"[yellow]warning:[/] {explain_missing(paths, missing)}; until then /recommend answers 503", soft_wrap=True
        )
    os.environ["NBO_HOME"] = str(paths.home)
    if workers is not None:
        os.environ["NBO_WORKERS"] = str(workers)
    os.execv(serve_command(port)[0], serve_command(port))


@app.command()
def build(home: Home = None) -> None:
    """Put the champion in BentoML's model store and build a Bento declaring it (served if the registry is down)."""
    from serving.process import build_bento
    from training.registry import check_servable, connect, find_version

    client = connect(get_paths(home))
    version = find_version(client)
    if version is None:
        fail("no champion in the registry: run `nbo train` first")
    try:
        check_servable(client, version)
    except ValueError as error:
        fail(f"the champion cannot be packaged: {error}")
    bento, model = build_bento(client, version)
    console.print(
        f"built {bento} declaring the model {model} (champion version {version}, served when the registry "
        f"cannot be reached); serve it with `bentoml serve {bento}` and NBO_HOME set",
        soft_wrap=True,
    )


@app.command()
def recommend(
    customer_id: str,
    channel: str = "web",
    k: int = 3,
    category: str | None = None,
    url: str = "http://127.0.0.1:3000",
    api_key: Annotated[
        str | None,
        typer.Option(envvar="NBO_API_KEY", show_envvar=True, help="Sent as x-api-key (when /recommend needs it)."),
    ] = None,
) -> None:
    """Ask a running service for a customer's best offers."""
    body = {"customer_id": customer_id, "channel": channel, "k": k, "context": {"current_category": category}}
    headers = {"x-api-key": api_key} if api_key else {}
    try:
        response = httpx.post(f"{url}/recommend", json=body, headers=headers, timeout=10)
    except httpx.HTTPError as error:
        fail(f"no service at {url} ({error}); start one with `nbo serve`")
    if response.status_code != 200:
        fail(f"{response.status_code}: {response.text}")
    show_offers(response.json())


@app.command()
def openapi(
    output: Annotated[Path | None, typer.Option(help="Where to write it (default docs/openapi.json).")] = None,
) -> None:
    """Write the service's OpenAPI document, the one its /docs.json serves."""
    from serving.openapi import OPENAPI_PATH, write_openapi

    console.print(f"wrote {write_openapi(output or OPENAPI_PATH)}")


@app.command()
def settings(
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the table of docs/operations.md.")] = False,
) -> None:
    """Every NBO_ setting: its value here (secrets masked), its default and what it does."""
    from nbo.settings import describe_settings, load_settings, render_settings_markdown, shown

    if markdown:
        print(render_settings_markdown(), end="")
        return
    try:
        current = load_settings()
    except ValueError as error:
        fail(str(error))
    table = Table(title="NBO_ settings (empty or unset: the default)")
    for column in ("variable", "value", "default", "meaning"):
        table.add_column(column, overflow="fold")
    for row, (name, value) in zip(describe_settings(), current):
        table.add_row(
            row["variable"], shown(value) if name in current.model_fields_set else "", row["default"], row["meaning"]
        )
    console.print(table)


def show_offers(decision: dict) -> None:
    """Print one customer's ranked offers as a table."""
    title = f"{decision['customer_id']} (model v{decision['model_version']}" + (
        ", popularity fallback)" if decision["fallback"] else ")"
    )
    table = Table(title=title)
    for column in ("offer", "score", "expected value", "reason"):
        table.add_column(column)
    for offer in decision["offers"]:
        table.add_row(offer["offer_id"], f"{offer['score']:.3f}", f"{offer['expected_value']:.2f}", offer["reason"])
    console.print(table)


@app.command()
def forget(
    customer_id: str,
    home: Home = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Erase a customer: raw events and tables, online store, decision log, quarantine, lifetime and training
    sets (docs/privacy.md); later ingests and builds leave their past events out."""
    from features.forget import forget_customer
    from features.online import open_store
    from serving.decisions import open_decision_log

    paths = get_paths(home)
    if not paths.raw.is_dir():
        fail(f"{paths.home} is no NBO home (no raw/ folder)")
    if not customer_id.strip():
        fail("the customer id is empty")
    store, log = open_store(paths), open_decision_log(paths)
    try:
        erased = forget_customer(paths, customer_id, store, log)
    finally:
        store.close()
        log.close()
    if as_json:
        print(json.dumps(erased))
        return
    table = Table(title=f"erased {sum(erased.values()):,} rows or keys")
    table.add_column("place")
    table.add_column("erased", justify="right")
    for place, count in erased.items():
        table.add_row(place, f"{count:,}")
    console.print(table)


@app.command()
def demo(customers: int = 3000, days: int = 180, seed: int = 42, home: Home = None) -> None:
    """The whole job on embedded defaults: generate, features, train, uplift, a campaign, serve and recommend, the
    HTML report; then where to look (report, MLflow UI, campaign file)."""
    from features.segments import latest_rows
    from features.training_set import read_customer_features
    from serving.process import free_port, start_service, stop_service, wait_ready
    from training.commands import working
    from training.report_page import write_report
    from training.uplift.commands import train_command as train_uplift

    paths = get_paths(home)
    console.rule("1/8 generate events")
    generate(customers, days, seed, None, paths.home)
    console.rule("2/8 build features")
    features(6, 7, paths.home)
    console.rule("3/8 train and register the purchase-intent model")
    train(paths.home)
    console.rule("4/8 learn each offer's uplift from the simulated campaigns")
    with working("learning each offer's uplift"):
        train_uplift(home=paths.home)
    console.rule("5/8 an e-mail campaign to a fifth of the customers")
    campaign(0.2, home=paths.home)
    latest = latest_rows(read_customer_features(paths.training_set, ["customer_id", "cutoff", "cust_views_30d"]))
    known = latest.sort_values("cust_views_30d", ascending=False)["customer_id"].tolist()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    console.rule(f"6/8 start bentoml serve on {url}")
    process = start_service(paths, port, paths.home / "service.log")
    try:
        wait_ready(process, url)
        console.rule("7/8 POST /recommend")
        for customer_id in [known[0], known[len(known) // 4], "someone-new"]:
            response = httpx.post(f"{url}/recommend", json={"customer_id": customer_id, "channel": "web"}, timeout=10)
            response.raise_for_status()
            show_offers(response.json())
    finally:
        stop_service(process)
    console.rule("8/8 the model's HTML report")
    written = write_report(paths)
    console.print(
        f"\nReport:      {written}  (open it in a browser; `nbo report` writes it again)"
        f"\nMLflow UI:   .venv/bin/mlflow ui --backend-store-uri {paths.tracking_uri}"
        f"\n             then http://127.0.0.1:5000 (model '{MODEL_NAME}', alias 'champion'; runs, metrics, "
        "plots)"
        f"\nCampaign:    {paths.home / 'campaign.parquet'}  (one offer per customer; `nbo campaign --budget "
        "0.2` writes it again)"
        f"\nService:     .venv/bin/nbo serve --port 3000"
        f"\nAsk it:      .venv/bin/nbo recommend {known[0]} --channel web",
        soft_wrap=True,
    )
