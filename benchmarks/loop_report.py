"""The closed loop's report: per day and arm, the true incremental revenue and the regret against the oracle, beside
the loop's own measurement; a summary against the goals; a plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.loop_world import World

LAST_DAYS = 7  # "by the end": the last week's share of the oracle


def summarise(
    world: World,
    ledgers: dict,
    measured: list[dict],
    nights: list[dict],
    days: int,
    customers: int,
    history_days: int,
    seed: int,
    seconds: float,
    prepare_seconds: float,
) -> dict:
    """Per-day rows and the summary, as plain JSON-ready values."""
    oracle = np.array(ledgers["oracle"].truth)
    rows = []
    for day in range(days):
        row = {"day": day}
        for name, ledger in ledgers.items():
            truth = np.array(ledger.truth[: day + 1])
            row[name] = {
                "truth": round(float(truth[-1]), 2),
                "truth_cumulative": round(float(truth.sum()), 2),
                "regret": round(float(oracle[day] - truth[-1]), 2),
                "regret_cumulative": round(float(oracle[: day + 1].sum() - truth.sum()), 2),
                "shown": ledger.shown[day],
                "clicks": ledger.clicks[day],
            }
        row["measured"] = measured[day]
        rows.append(row)
    return {
        "rows": rows,
        "nights": nights,
        "summary": describe(
            ledgers, rows, nights, days, customers, history_days, seed, seconds, prepare_seconds, world
        ),
    }


def describe(
    ledgers: dict,
    rows: list[dict],
    nights: list[dict],
    days: int,
    customers: int,
    history_days: int,
    seed: int,
    seconds: float,
    prepare_seconds: float,
    world: World,
) -> dict:
    """The run's figures against the goals."""
    total = {name: float(np.sum(ledger.truth)) for name, ledger in ledgers.items()}
    last = {name: float(np.sum(ledger.truth[-LAST_DAYS:])) for name, ledger in ledgers.items()}
    final = rows[-1]["measured"]
    system = [r["measured"]["system"] for r in rows if r["measured"].get("system", {}).get("incremental") is not None]
    return {
        "days": days,
        "customers": customers,
        "history_days": history_days,
        "seed": seed,
        "control_customers": int(world.control.sum()),
        "seconds": round(seconds, 1),
        "prepare_seconds": round(prepare_seconds, 1),
        "night_seconds_mean": round(float(np.mean([n["seconds"] for n in nights])), 1) if nights else None,
        "nights_ok": sum(n["ok"] for n in nights),
        "nights": len(nights),
        "days_ranked_by_uplift": sum(n.get("ranking", {}).get("by") == "incremental_value" for n in nights),
        "true_incremental_revenue": {k: round(v, 1) for k, v in total.items()},
        "true_incremental_revenue_last_week": {k: round(v, 1) for k, v in last.items()},
        "loop_share_of_oracle": round(total["loop"] / total["oracle"], 3) if total["oracle"] else None,
        "loop_share_of_oracle_last_week": round(last["loop"] / last["oracle"], 3) if last["oracle"] else None,
        "typical_response_share_of_oracle": (
            round(total["typical_response"] / total["oracle"], 3)
            if total["oracle"] and "typical_response" in total
            else None
        ),
        "loop_beats_frozen_last_week": last["loop"] > last["frozen"],
        "loop_beats_popularity_last_week": last["loop"] > last["popularity"],
        "measured_final": final,
        "system_measured_days": len(system),
        "system_covers_truth_days": sum(m["covers_truth"] for m in system),
        "posted_covers_truth_days": sum(r["measured"]["posted_purchases"]["covers_truth"] for r in rows),
    }


def write_plot(report: dict, target: Path) -> None:
    """Cumulative true incremental revenue per arm with the loop's measurement and interval; daily regret."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    days = [r["day"] for r in rows]
    arms = [k for k in rows[0] if k not in ("day", "measured")]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for arm in arms:
        left.plot(days, [r[arm]["truth_cumulative"] for r in rows], label=f"{arm} (truth)")
        if arm != "oracle":
            right.plot(days, [r[arm]["regret"] for r in rows], label=arm)
    posted = [r["measured"]["posted_purchases"] for r in rows]
    left.plot(days, [m["incremental"] for m in posted], "k--", label="loop, treatment vs control (posted purchases)")
    left.fill_between(
        days, [m["low"] for m in posted], [m["high"] for m in posted], color="grey", alpha=0.25, label="95 % interval"
    )
    system = [
        (r["day"], r["measured"]["system"])
        for r in rows
        if r["measured"].get("system", {}).get("incremental") is not None
    ]
    if system:
        values = np.array([[m["incremental"], m["low"], m["high"], m["truth"]] for _, m in system])
        at = [d for d, _ in system]
        left.errorbar(
            at,
            values[:, 0],
            yerr=[values[:, 0] - values[:, 1], values[:, 2] - values[:, 0]],
            fmt="o",
            color="purple",
            capsize=3,
            label="nbo performance (7-day horizon)",
        )
        left.plot(at, values[:, 3], "x", color="purple", label="truth, same customers and horizon")
    left.set(title="cumulative incremental revenue", xlabel="day")
    right.set(title="daily regret against the oracle", xlabel="day")
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    summary = report["summary"]
    figure.suptitle(f"closed loop: {summary['customers']:,} customers, {summary['days']} days")
    figure.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=110)
    plt.close(figure)
