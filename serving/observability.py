"""Prometheus metrics and structured decision logs, with customer ids pseudonymised."""

from __future__ import annotations

import hashlib
import json
import logging

from prometheus_client import Counter, Histogram

from nbo.settings import read_setting

RECOMMENDATIONS = Counter("nbo_recommendations", "Offers recommended", ["offer_id", "channel"])
DECISIONS = Counter("nbo_decisions", "Recommendation decisions", ["fallback", "channel"])
LATENCY = Histogram(
    "nbo_recommend_seconds",
    "Time to decide, inside the service",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
)
DEGRADED = Counter(
    "nbo_degraded", "Decisions served by the popularity fallback because the online store was unreachable"
)
REASON_CONTRIBUTIONS = Counter(
    "nbo_reason_contributions",
    "Shown offers explained, by whether their SHAP contributions were computed or reused (same split decisions)",
    ["source"],
)
EVENTS = Counter("nbo_events", "Events received on /events", ["outcome"])
logger = logging.getLogger("nbo.decisions")
_SALT = read_setting("log_salt")


def pseudonymise(customer_id: str) -> str:
    """A stable, salted hash: logs can follow a customer without showing an e-mail address or a name."""
    return hashlib.sha256(f"{_SALT}:{customer_id}".encode()).hexdigest()[:16]


def observe_decision(decision, channel: str, seconds: float) -> None:
    """Count the decision, time it, and log it as one JSON line."""
    LATENCY.observe(seconds)
    DECISIONS.labels(str(decision.fallback).lower(), channel).inc()
    if decision.degraded:
        DEGRADED.inc()
    for offer in decision.offers:
        RECOMMENDATIONS.labels(offer.offer_id, channel).inc()
    if not logger.isEnabledFor(logging.INFO):  # the JSON line and the hash cost more than the rest
        return
    logger.info(
        json.dumps(
            {
                "decision_id": decision.decision_id,
                "customer": pseudonymise(decision.customer_id),
                "channel": channel,
                "model_version": decision.model_version,
                "fallback": decision.fallback,
                "degraded": decision.degraded,
                "offers": [o.offer_id for o in decision.offers],
                "ms": round(seconds * 1000, 3),
            }
        )
    )
