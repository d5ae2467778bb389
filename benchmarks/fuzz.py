"""Property-based fuzzing of the real service from its own OpenAPI document, with conformance checks.

    .venv/bin/python -m benchmarks.fuzz [--cases 5000] [--home DIR]

Builds a throwaway home (simulated retailer, champion) unless DIR is given, starts `bentoml serve` on it with an
API key, and sends every operation of /docs.json the same share of the cases, half valid by the schema and half
not (schemathesis' positive and negative generation), with the key; erasures, which rewrite the home's files, get
ERASURES cases a round. Each answer is checked: no 5xx, a status the document declares, its content type, and a
body that conforms to the declared schema (the error document for every error). Prints the cases, the 5xx and the
failures per check.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

from nbo.config import Paths, get_paths
from serving.process import free_port, start_service, stop_service, wait_ready

KEY = "fuzz-key"
ERASURES = 20  # cases of DELETE /customers/{id} per round and mode: each rewrites the home's files (about 1.5 s)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@dataclass
class Tally:
    """What a fuzzing run saw."""

    cases: int = 0
    server_errors: int = 0
    statuses: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)


def fuzz_operation(operation, url: str, cases: int, mode: GenerationMode, tally: Tally) -> bool:
    """Send `cases` generated requests to one operation, with the key, and tally the answers and failed checks.
    False when the operation has no case of this mode (nothing to make invalid in a GET without parameters)."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=cases, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def send(case) -> None:
        response = case.call(base_url=url, headers={"x-api-key": KEY}, timeout=30)
        tally.cases += 1
        tally.statuses[f"{operation.method.upper()} {operation.path} {response.status_code}"] += 1
        tally.server_errors += response.status_code >= 500
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as group:
            for failure in group.exceptions:
                name = f"{operation.method.upper()} {operation.path}: {failure.title}"
                tally.failures[name] += 1
                tally.examples.setdefault(name, f"{str(failure)[:400]} <- {case.body!r:.200}")

    try:
        send()
    except Unsatisfiable:
        return False
    return True


def fuzz_service(url: str, cases: int) -> Tally:
    """Fuzz every operation of the live document, in rounds (new examples each), until `cases` were sent."""
    tally = Tally()
    operations = [result.ok() for result in schemathesis.openapi.from_url(f"{url}/docs.json").get_all_operations()]
    plan = [(operation, mode) for operation in operations for mode in GenerationMode]
    per_round = max(10, cases // len(plan))
    while tally.cases < cases:
        plan = [
            (operation, mode)
            for operation, mode in plan
            if fuzz_operation(
                operation,
                url,
                min(per_round, ERASURES) if operation.method.upper() == "DELETE" else per_round,
                mode,
                tally,
            )
        ]
    return tally


def build_home(home: Path) -> Paths:
    """A small simulated retailer whose data ends today, with a champion."""
    from features.pipeline import build_features
    from simulator.generate import simulate
    from training.train import train

    paths = get_paths(home)
    start = (pd.Timestamp.now(tz="UTC").normalize() - pd.Timedelta(days=120)).date().isoformat()
    simulate(paths.raw, 800, 120, seed=11, start=start)
    build_features(paths, n_cutoffs=4, horizon_days=7)
    train(paths)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=5000, help="Cases in all, shared by the operations.")
    parser.add_argument("--home", type=Path, help="A home with a champion (copied, not changed).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch) / "home"
        paths = get_paths(shutil.copytree(args.home, home)) if args.home else build_home(home)
        port = free_port()
        process = start_service(paths, port, Path(scratch) / "service.log", env={"NBO_API_KEY": KEY})
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(process, url, timeout_s=120)
            started = time.perf_counter()
            tally = fuzz_service(url, args.cases)
            seconds = time.perf_counter() - started
            log = (Path(scratch) / "service.log").read_text(errors="replace")
        finally:
            stop_service(process)
    operations = len({" ".join(key.split()[:2]) for key in tally.statuses})
    print(
        f"{tally.cases} cases over {operations} operations in {seconds:.0f} s: {tally.server_errors} answers 5xx, "
        f"{sum(tally.failures.values())} failed checks; service log {len(log) / 1024:.0f} KB, "
        f"{log.count('Traceback')} tracebacks"
    )
    print("statuses:", dict(sorted(tally.statuses.items())))
    for name, count in tally.failures.most_common():
        print(f"  {count:5d} {name}\n        {tally.examples[name]}")


if __name__ == "__main__":
    main()
