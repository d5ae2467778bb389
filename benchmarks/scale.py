"""Raw events to a registered champion at a given size, stage by stage: seconds and peak memory of every process.

    .venv/bin/python -m benchmarks.scale --events 10M --home /work/scale/h10m --dask 2 --compare-full
    .venv/bin/python -m benchmarks.scale --plot /work/scale/scale.json   # docs/scaling.png from the results

Stages, each its own process tree (the Dask workers are children of the feature stage): `nbo generate` when the home
has no events (not part of the raw-to-champion time), `nbo features --dask N` (the training set built and written by
the workers), then the purchase-intent model trained on a sample that fits $NBO_TRAIN_MEMORY_GIB (or `--sample`),
evaluated on the whole test cutoff and registered (`training.train.train`, what `nbo train` runs before lifetime
value). Peak memory is the largest sum of resident memory over a stage's processes, sampled every 0.2 s.
``--compare-full`` then trains on every row (no sampling) in the same home and prints both test AUCs, on the same
test rows, unweighted. Results are appended to ``--out`` as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
NBO = [str(ROOT / ".venv" / "bin" / "nbo")]
EVENTS_PER_CUSTOMER = 371  # the simulator's retailer over 365 days: 27,000 customers give 10.03M events
START, DAYS, SEED = "2025-11-30", 365, 7
# The train stage's steps (functions training.train calls), timed where it looks them up.
TRAIN_STEPS = ("load_sampled_split", "to_matrix", "fit_share", "fit", "build_report", "champion_score", "log_model")


def parse_count(text: str) -> int:
    """1M, 10M, 100M or a plain number."""
    scale = {"K": 10**3, "M": 10**6}.get(text[-1].upper(), 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def tree_rss(process: psutil.Process) -> int:
    """Resident bytes of a process and all its descendants (processes that end meanwhile count 0)."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            continue
    return total


def run_stage(command: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a command to its end: wall seconds, the peak summed RSS of its process tree (GiB), its output."""
    began = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    peak, watched = [0], psutil.Process(child.pid)

    def watch() -> None:
        while child.poll() is None:
            peak[0] = max(peak[0], tree_rss(watched))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = child.communicate()
    watcher.join()
    if child.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({child.returncode}):\n{err[-3000:]}")
    return {"seconds": round(time.perf_counter() - began, 1), "peak_gib": round(peak[0] / 2**30, 2), "out": out}


def last_json(text: str) -> dict:
    """The last JSON document a command printed (the CLI prints one, perhaps over several lines)."""
    return json.loads(text[text.rfind("\n{") + 1 :])  # 0 when the document starts the text


def time_steps(module: ModuleType, names: tuple[str, ...]) -> dict[str, float]:
    """Seconds spent in each named function of a module from now on (the module's own calls to it)."""
    spent: dict[str, float] = defaultdict(float)

    def timed(name: str, function: Callable) -> Callable:
        def run(*args, **kwargs):
            began = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - began

        return run

    for name in names:
        setattr(module, name, timed(name, getattr(module, name)))
    return spent


def train_in_process(home: str, sample: float | None) -> None:
    """The train stage's body (run in its own process by ``run_stage``): train, register, print the result and the
    seconds of its steps."""
    import training.train
    from nbo.config import get_paths

    steps = time_steps(training.train, TRAIN_STEPS)
    result = training.train.train(get_paths(home), sample_rate=sample)
    metrics = {k: result["metrics"][k] for k in ("test_auc", "test_ece", "test_log_loss", "best_iteration")}
    found = {"version": result["version"], "promoted": result["promoted"], **metrics}
    print(json.dumps({**found, "steps": {k: round(v, 1) for k, v in steps.items()}}))


def train_stage(home: Path, sample: float | None) -> dict[str, Any]:
    """The train stage in its own process, and what it registered (with the run's sample parameters)."""
    from mlflow import MlflowClient

    from nbo.config import MODEL_NAME, get_paths

    command = [sys.executable, "-m", "benchmarks.scale", "--train-home", str(home)]
    stage = run_stage(command + (["--sample", str(sample)] if sample else []))
    result = last_json(str(stage.pop("out")))
    client = MlflowClient(get_paths(home).tracking_uri)
    params = client.get_run(str(client.get_model_version(MODEL_NAME, result["version"]).run_id)).data.params
    keys = ("train_rows", "valid_rows", "test_rows", "sample_rate", "sample_positives", "sample_negatives")
    return {**stage, **result, **{k: float(params[k]) for k in keys}}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every stage at one size; the figures as a dict (also printed)."""
    home = Path(args.home)
    events = parse_count(args.events)
    found: dict[str, Any] = {"events_target": events, "load_average": psutil.getloadavg()}
    if not (home / "raw" / "events.parquet").exists():
        customers = max(events // EVENTS_PER_CUSTOMER, 1)
        command = [*NBO, "generate", "--customers", str(customers), "--days", str(DAYS), "--seed", str(SEED)]
        stage = run_stage([*command, "--start", START, "--home", str(home)])
        found["generate"] = {k: v for k, v in stage.items() if k != "out"}
        print("generate", found["generate"], flush=True)
    for stale in ("mlflow.db", "mlartifacts", "mlruns", "models"):  # a fresh registry: the run ends on a first champion
        target = home / stale
        target.unlink() if target.is_file() else shutil.rmtree(target, ignore_errors=True)
    command = [*NBO, "features", "--dask", str(args.dask), "--worker-memory", args.worker_memory, "--home", str(home)]
    stage = run_stage(command)
    found["features"] = {**{k: v for k, v in stage.items() if k != "out"}, "lineage": last_json(str(stage["out"]))}
    print("features", found["features"], flush=True)  # each stage as it ends: a long run shows where it is
    found["train"] = train_stage(home, args.sample)
    print("train", found["train"], flush=True)
    stages = (found["features"], found["train"])
    found["raw_to_champion_seconds"] = round(sum(float(s["seconds"]) for s in stages), 1)
    found["peak_gib"] = max(float(s["peak_gib"]) for s in stages)
    found["load_average_end"] = psutil.getloadavg()  # other work on the machine slows every stage
    if args.compare_full:
        full = train_stage(home, 1.0)
        found["train_full"] = full
        found["auc_difference"] = round(float(found["train"]["test_auc"]) - float(full["test_auc"]), 5)
    return found


def report(found: dict) -> None:
    """Print the figures of one size."""
    lineage = found["features"]["lineage"]
    print(f"events {lineage['events']:,}; training rows {lineage['rows']:,} ({lineage['positives']:,} positive)")
    for name in ("generate", "features", "train", "train_full"):
        if name in found:
            stage = found[name]
            extra = f", test AUC {stage['test_auc']:.4f}, rate {stage['sample_rate']:.4f}" if "version" in stage else ""
            print(f"  {name:<10} {stage['seconds']:>8.1f} s  peak {stage['peak_gib']:>6.2f} GiB{extra}")
            if "steps" in stage:
                print("             " + ", ".join(f"{k} {v:.1f} s" for k, v in stage["steps"].items()))
    print(f"raw to champion: {found['raw_to_champion_seconds']:.1f} s, peak {found['peak_gib']:.2f} GiB")
    if "auc_difference" in found:
        sampled, full = found["train"]["test_auc"], found["train_full"]["test_auc"]
        print(f"test AUC sampled {sampled:.5f} vs full {full:.5f}: difference {found['auc_difference']:+.5f}")


def plot(results: Path, out: Path) -> None:
    """Seconds and peak memory against events, from the JSON lines of earlier runs (the last run of each size)."""
    from matplotlib.figure import Figure

    runs = {r["features"]["lineage"]["events"]: r for r in map(json.loads, results.read_text().splitlines())}
    sizes = sorted(runs)
    figure = Figure(figsize=(10, 4), layout="constrained")
    left, right = figure.subplots(1, 2)
    for stage in ("features", "train"):
        left.plot(sizes, [runs[s][stage]["seconds"] for s in sizes], "o-", label=stage)
        right.plot(sizes, [runs[s][stage]["peak_gib"] for s in sizes], "o-", label=stage)
    left.plot(sizes, [runs[s]["raw_to_champion_seconds"] for s in sizes], "o-", label="raw to champion")
    left.axhline(1200, color="k", linestyle=":", label="goal: 20 min")
    right.axhline(16e9 / 2**30, color="k", linestyle=":", label="goal: 16 GB")
    left.set(xscale="log", yscale="log", xlabel="events", ylabel="seconds")
    right.set(xscale="log", ylim=(0, 16), xlabel="events", ylabel="peak memory, all processes (GiB)")
    for ax in (left, right):
        ax.legend(fontsize=8, loc="upper left")
    figure.suptitle("Raw events to a registered champion, 2 cores, 24 GiB")
    figure.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", default="1M", help="1M, 10M, 100M: the simulated retailer's size")
    parser.add_argument("--home", help="the home (data outside the repository); generated when it has no events")
    parser.add_argument("--dask", type=int, default=2, help="local Dask worker processes of the feature stage")
    parser.add_argument("--worker-memory", default="auto", help="memory limit of each Dask worker")
    parser.add_argument("--sample", type=float, help="negative rate (default: what fits $NBO_TRAIN_MEMORY_GIB)")
    parser.add_argument("--compare-full", action="store_true", help="also train on every row; print both AUCs")
    parser.add_argument("--out", type=Path, default=Path("/work/scale/scale.json"), help="results, JSON lines")
    parser.add_argument("--plot", type=Path, help="draw docs/scaling.png from these results and stop")
    parser.add_argument("--train-home", help=argparse.SUPPRESS)  # the train stage's own process
    args = parser.parse_args()
    if args.train_home:
        train_in_process(args.train_home, args.sample)
        return
    if args.plot:
        plot(args.plot, ROOT / "docs" / "scaling.png")
        return
    found = measure(args)
    report(found)
    with args.out.open("a") as results:
        results.write(json.dumps(found, default=str) + "\n")


if __name__ == "__main__":
    main()
