"""The BentoML service: /recommend, /events, /admin/reload and /status over the champion and the store."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping
from functools import partial
from http import HTTPStatus
from typing import Annotated, Any, Literal, cast

import anyio
import bentoml
import pandas as pd
from bentoml.exceptions import BentoMLException
from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from features.fingerprints import quarantine_conflicts
from features.forget import forget_customer
from features.lake import append_to_lake
from features.schema import CHANNELS
from features.store_interface import StoreUnavailable, Written
from nbo.config import get_paths
from nbo.settings import load_settings
from serving.campaign import check_campaign, plan_campaign
from serving.campaign_api import CAMPAIGN_JOBS_APP, CampaignJob, job_answer
from serving.campaign_jobs import CampaignJobs
from serving.checks import SOURCE, check_events
from serving.errors import quiet_refusal_logs, refuse
from serving.guard import Guard, key_matches, recommend_needs_key
from serving.observability import EVENTS, observe_decision
from serving.openapi import complete_openapi
from serving.recommender import Decision, NoModel, Recommender
from serving.runtime import (
    BodyLimit,
    follow_registry,
    limit_blas_threads,
    reload_interval,
    request_reload,
    settle_heap,
    worker_count,
)
from training.champions import LIFETIME, installed
from training.registry import connect, load_model

Channel = Literal[CHANNELS]  # type: ignore[valid-type]  # the schema's channels, declared once
logger = logging.getLogger("nbo.serving")
MAX_EVENTS = 1000
MAX_BODY_BYTES = 1_000_000
STORE_RETRY_AFTER_S = 1  # a store back from an outage answers again within a second
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # ids and names: no NUL, no line breaks, no escapes
quiet_refusal_logs()


class RequestContext(BaseModel):
    """What the page shows right now."""

    model_config = ConfigDict(extra="forbid")
    current_category: str | None = Field(
        None,
        max_length=128,
        pattern=PRINTABLE,
        description="Category the customer is browsing.",
        examples=["running_shoes"],
    )
    cart_items: list[Annotated[str, Field(max_length=128, pattern=PRINTABLE)]] = Field(
        default_factory=list, max_length=100, description="Item ids in the customer's cart.", examples=[["i00042"]]
    )


class RecommendRequest(BaseModel):
    """Who asks, where, and how many offers."""

    model_config = ConfigDict(extra="forbid")
    customer_id: str = Field(
        ..., min_length=1, max_length=128, pattern=PRINTABLE, description="Known customer id.", examples=["c0000123"]
    )
    channel: Channel = Field(..., description="Channel the offers will be shown in.", examples=["web"])
    k: int = Field(3, ge=1, le=20, description="How many offers to return.")
    context: RequestContext = Field(default_factory=RequestContext, description="Page context.")


class OfferOut(BaseModel):
    """One ranked offer."""

    offer_id: str = Field(..., description="Offer id.", examples=["o007"])
    score: float = Field(..., description="Predicted purchase probability in the offer's category.")
    expected_value: float = Field(..., description="score x the offer's value (expected margin).")
    reason: str = Field(
        ...,
        description="Why this offer, in plain words.",
        examples=["You put running shoes in your cart just now and viewed running shoes 4 times in the last 7 days."],
    )


class RecommendResponse(BaseModel):
    """The ranked offers for one customer."""

    decision_id: str = Field(..., description="Send it back on offer_shown / offer_click / purchase events.")
    customer_id: str = Field(..., description="The customer asked about.")
    model_version: str | None = Field(..., description="Registered model version that scored the offers.")
    fallback: bool = Field(
        ...,
        description="True when offers come from popularity, not the model "
        "(unknown customer, or the online store unreachable).",
    )
    degraded: bool = Field(
        False,
        description="True when the online store could not be reached: the offers are "
        "the popularity fallback whatever the customer's history.",
    )
    offers: list[OfferOut] = Field(..., description="Best offer first; empty when a contact cap applies.")
    withheld: Literal["opted_out"] | None = Field(
        None, description="Set when no offer may be made at all: opted_out (the customer sent an opt_out event)."
    )


class EventIn(BaseModel):
    """One behavioural event in the canonical schema (checked row by row; bad rows are quarantined)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    event_id: str | None = Field(None, max_length=128, description="Unique id; derived from the content if absent.")
    ts: str = Field(..., max_length=64, description="ISO 8601 time, UTC.", examples=["2025-06-01T10:00:00Z"])
    customer_id: str | None = Field(None, max_length=128)
    anonymous_id: str | None = Field(None, max_length=128)
    session_id: str | None = Field(None, max_length=128)
    channel: str = Field(..., max_length=32, examples=["web"])
    event_type: str = Field(..., max_length=32, examples=["product_view"])
    item_id: str | None = Field(None, max_length=128)
    category: str | None = Field(None, max_length=128)
    amount: float | None = None
    quantity: float | None = None
    offer_id: str | None = Field(None, max_length=128)
    campaign_id: str | None = Field(None, max_length=128)
    decision_id: str | None = Field(None, max_length=64)


class EventsRequest(BaseModel):
    """A batch of events."""

    model_config = ConfigDict(extra="forbid")
    events: list[EventIn] = Field(..., min_length=1, max_length=MAX_EVENTS)


class Rejected(BaseModel):
    row: int = Field(..., description="1-based position in the batch.")
    field: str
    reason: str


class EventsResponse(BaseModel):
    accepted: int = Field(..., description="Events applied now.")
    duplicates: int = Field(..., description="Valid events already applied before (same event_id and content).")
    conflicts: int = Field(
        0,
        description="Events whose event_id was already used for different content: not "
        "applied, listed in `rejected` and quarantined.",
    )
    rejected: list[Rejected] = Field(..., description="Events refused, also written to the quarantine file.")


class CampaignRequest(BaseModel):
    """Who to target and how many to contact: starts a campaign job."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    budget: float = Field(
        ..., ge=0.0001, le=1, description="Fraction of eligible customers to contact.", examples=[0.2]
    )
    channel: Channel = Field("email", description="Channel of the campaign (opt-in and offer channels apply).")
    segment: dict[str, str] = Field(
        default_factory=dict,
        max_length=10,
        description="Customer attribute filters, e.g. activity_tier, value_tier, lifecycle_stage.",
        examples=[{"value_tier": "great"}],
    )


class Status(BaseModel):
    model_version: str | None
    model_source: Literal["registry", "packaged", "none"] = Field(
        ...,
        description="registry: the champion; packaged: the model built into the Bento (registry "
        "unreachable at start); none: no model, /recommend answers 503 and /readyz is not ready.",
    )
    ranking: Literal["incremental_value", "purchase_intent"] = Field(
        "purchase_intent",
        description="incremental_value: offers ranked by the published uplift model's predicted "
        "incremental revenue (its gate passed); purchase_intent: by purchase "
        "probability x offer value.",
    )
    ranking_reason: str = Field("", description="The uplift gate's verdict, in words, with its held-out figures.")
    uplift_version: str | None = Field(None, description="Registered version of nbo-uplift judged (its champion).")
    lifetime_version: str | None = Field(
        None, description="Registered version of nbo-lifetime-value whose value tiers the home holds."
    )


def respond(decision: Decision) -> RecommendResponse:
    """The response of a decision, built without re-validating what the recommender typed itself."""
    offers = [
        OfferOut.model_construct(offer_id=o.offer_id, score=o.score, expected_value=o.expected_value, reason=o.reason)
        for o in decision.offers
    ]
    return RecommendResponse.model_construct(
        decision_id=decision.decision_id,
        customer_id=decision.customer_id,
        model_version=decision.model_version,
        fallback=decision.fallback,
        degraded=decision.degraded,
        offers=offers,
        withheld=decision.withheld,
    )


def key_accepted(headers: Mapping[str, str]) -> bool:
    """Whether no API key is configured or the headers carry it (constant-time comparison)."""
    return key_matches(headers.get("x-api-key", "").encode())


def require_key(ctx: bentoml.Context) -> None:
    """Refuse with 401 unless no API key is configured or the request carries it."""
    if not key_accepted(ctx.request.headers):
        raise BentoMLException("missing or wrong x-api-key header", error_code=HTTPStatus.UNAUTHORIZED)


# $NBO_WORKERS processes serve (one per core for throughput; they share the online store and the decision log, and
# a worker sees another's served offers once its writer commits them, within milliseconds).
# /recommend is the hot path: its JSON decision line (serving.observability) replaces BentoML's access line, and
# its latency histogram BentoML's per-request metrics and trace span, which cost more CPU than the decision. It is
# async: over the embedded store a decision runs on the event loop, with no hand-off to a worker thread and back
# (p99 10.6-12.6 ms against 14.1-15.8 ms at 200 req/s, docs/benchmarks.md). Nothing on that path waits for long:
# SQLite in WAL mode lets readers read while other processes write (a write of /events on the same connection holds
# it one statement at a time), and the decision log's queue takes the offers without waiting for room.
HOT_PATHS = ["/recommend"]


@bentoml.service(
    workers=worker_count(),
    traffic={"timeout": 10},
    logging={"access": {"skip_paths": ["/metrics", "/healthz", "/livez", "/readyz", *HOT_PATHS, "/customers/"]}},
    tracing={"excluded_urls": HOT_PATHS},
)
class NextBestOffer:
    """Next-best-offer decisions over HTTP."""

    def __init__(self) -> None:
        self.paths = get_paths()
        try:
            load_settings()  # every NBO_ variable now, not at the first request that reads a bad one
            self.recommender = Recommender.from_home(self.paths)
        except (ValueError, FileNotFoundError) as error:  # a bad setting, no catalogue: one line, not a traceback
            logger.error("cannot start the service: %s", error)
            raise RuntimeError(f"cannot start the service: {error}") from None
        if self.recommender.scorer is None:
            logger.warning("%s; not ready until a champion is registered", NoModel())
        limit_blas_threads()
        settle_heap()
        self.jobs = CampaignJobs(self.paths)
        self.retry_after = str(math.ceil(reload_interval()))
        threading.Thread(
            target=follow_registry,
            args=(self.recommender, self.paths, reload_interval()),
            name="follow-champion",
            daemon=True,
        ).start()

    async def __is_ready__(self) -> bool:
        """Ready (/readyz 200) only with a model to serve."""
        return self.recommender.scorer is not None

    @bentoml.api(input_spec=RecommendRequest, output_spec=RecommendResponse)
    async def recommend(self, ctx: bentoml.Context, **request) -> RecommendResponse:
        """Rank the eligible offers for a customer in a channel."""
        if recommend_needs_key():
            require_key(ctx)
        parsed = RecommendRequest.model_validate(request)
        started = time.perf_counter()
        decide = partial(
            self.recommender.recommend,
            parsed.customer_id,
            parsed.channel,
            parsed.k,
            parsed.context.current_category,
            parsed.context.cart_items,
        )
        try:
            if self.recommender.decides_on_the_loop:  # a few ms of CPU: a thread hand-off would cost more
                decision = decide(wait_for_log=False)
            else:
                decision = await anyio.to_thread.run_sync(decide)
        except NoModel as error:  # the registry is looked at again within Retry-After seconds
            ctx.response.headers["Retry-After"] = self.retry_after
            return refuse(ctx, HTTPStatus.SERVICE_UNAVAILABLE, str(error), code="no_model")
        except StoreUnavailable as error:  # the shared decision log down, its waiting room full (shared_log)
            ctx.response.headers["Retry-After"] = str(STORE_RETRY_AFTER_S)
            return refuse(ctx, HTTPStatus.SERVICE_UNAVAILABLE, str(error), code="store_unavailable")
        seconds = time.perf_counter() - started
        observe_decision(decision, parsed.channel, seconds)
        ctx.response.headers["Server-Timing"] = f"decide;dur={seconds * 1000:.3f}"  # shown by browsers and load tools
        return respond(decision)

    @bentoml.api(input_spec=EventsRequest, output_spec=EventsResponse)
    def events(self, ctx: bentoml.Context, **request) -> EventsResponse:
        """Apply live events to the online store at once; idempotent by event_id."""
        require_key(ctx)
        raw = pd.DataFrame([e.model_dump() for e in EventsRequest.model_validate(request).events])
        try:  # the decisions known, the store's write and the outcomes logged: a resend of the batch is idempotent
            valid, quarantine = check_events(raw, self.recommender)
            written = self.recommender.store.apply(valid) if len(valid) else Written(0)
            self.recommender.log.record_outcomes(valid[~valid["event_id"].isin(written.conflicts)])
        except StoreUnavailable as error:  # nothing of the batch applied, quarantined or logged: it can be resent
            ctx.response.headers["Retry-After"] = str(STORE_RETRY_AFTER_S)
            return refuse(
                ctx,
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"{error}; nothing of the batch was applied, send it again",
                code="store_unavailable",
            )
        conflicts = quarantine_conflicts(raw, quarantine, valid, written.conflicts, SOURCE)
        quarantine = pd.concat([quarantine, conflicts], ignore_index=True).sort_values("row", ignore_index=True)
        valid = valid[~valid["event_id"].isin(written.conflicts)]
        try:  # the lake (features.lake) takes every accepted event, applied or resent, before the answer
            append_to_lake(self.paths, valid)
        except OSError as error:  # not acknowledged: the resend is a duplicate for the store and reaches the lake
            logger.error("could not keep events in the lake: %s", error)
            ctx.response.headers["Retry-After"] = str(STORE_RETRY_AFTER_S)
            return refuse(
                ctx,
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"the events could not be kept ({error.strerror}); send the batch again (a resend is idempotent)",
                code="lake_unavailable",
            )
        if not quarantine.empty:
            self.paths.quarantine.mkdir(parents=True, exist_ok=True)
            target = self.paths.quarantine / "api-events.csv"
            quarantine.to_csv(target, mode="a", header=not target.exists(), index=False)
        applied = written.applied
        EVENTS.labels("applied").inc(applied)
        EVENTS.labels("duplicate").inc(len(valid) - applied)
        EVENTS.labels("conflict").inc(len(conflicts))
        EVENTS.labels("rejected").inc(len(quarantine) - len(conflicts))
        if self.recommender.privacy is not None:
            self.recommender.privacy.record_opt_outs(valid)
        rejected = [Rejected(row=int(r.row), field=str(r.field), reason=str(r.reason)) for r in quarantine.itertuples()]
        if len(valid) == 0:  # nothing accepted: the error document, one detail per row (each one quarantined)
            return refuse(
                ctx,
                422,
                "no event of the batch was accepted",
                code="events_rejected",
                details=[
                    {"loc": ["events", r.row - 1, r.field], "msg": r.reason, "type": "rejected_event"} for r in rejected
                ],
            )
        return EventsResponse(
            accepted=applied, duplicates=len(valid) - applied, conflicts=len(conflicts), rejected=rejected
        )

    @bentoml.api(input_spec=CampaignRequest, output_spec=CampaignJob)
    def campaign(self, ctx: bentoml.Context, **request) -> CampaignJob:
        """Start a campaign job (the best offer per customer of a segment under a contact budget, by predicted
        uplift) and answer 202 at once; GET /campaign/{job_id} follows it and pages its rows."""
        require_key(ctx)
        parsed = CampaignRequest.model_validate(request)
        try:
            checked = check_campaign(self.paths, parsed.channel, parsed.segment)
        except (ValueError, FileNotFoundError) as error:  # no uplift model yet (409), a bad segment (400)
            status = HTTPStatus.CONFLICT if isinstance(error, FileNotFoundError) else HTTPStatus.BAD_REQUEST
            raise BentoMLException(str(error), error_code=status) from error
        plan = partial(
            plan_campaign, self.paths, self.recommender, parsed.budget, parsed.channel, parsed.segment, checked
        )
        job = job_answer(self.jobs.start(parsed.model_dump(), plan))
        ctx.response.status_code = HTTPStatus.ACCEPTED
        ctx.response.headers["Location"] = job.status_url
        return job

    @bentoml.api(route="/admin/reload")
    def reload(self, ctx: bentoml.Context) -> Status:
        """Load the current champion from the registry without downtime: at once in the worker answering, within a
        second in every other worker (the answer describes the worker answering)."""
        require_key(ctx)
        request_reload(self.paths)
        self.recommender.follow_uplift(self.paths)
        try:
            self.recommender.use_model(load_model(connect(self.paths)))
            settle_heap()
        except Exception as error:  # no champion, registry down, or a model this code cannot serve
            logger.warning("reload refused, keeping the current model: %s", error)
            ctx.response.status_code = 409
        return self.describe()

    @bentoml.api(route="/status")
    def status(self) -> Status:
        """Which model serves, and from where."""
        return self.describe()

    def describe(self) -> Status:
        scorer = self.recommender.scorer
        return Status(
            model_version=scorer.model.version if scorer else None,
            model_source=cast(Any, self.recommender.model_source),
            ranking=cast(Any, self.recommender.ranking),
            ranking_reason=self.recommender.ranking_verdict.reason,
            uplift_version=self.recommender.uplift_version,
            lifetime_version=getattr(installed(self.paths, LIFETIME), "version", None),
        )


SERVICE: Any = NextBestOffer  # BentoML's service object: its middleware, APIs and mounts come from the decorator
SERVICE.add_asgi_middleware(
    Guard, routes=tuple(api.route for api in SERVICE.apis.values()), openapi=complete_openapi
)  # first: the key before the body is read
SERVICE.add_asgi_middleware(BodyLimit, limit=MAX_BODY_BYTES)


def forget(request: Request) -> JSONResponse:
    """DELETE /customers/{customer_id}: erase a customer from the home, the online store and the decision log
    (features.forget) and answer what was erased per place; the API key is required."""
    if not key_accepted(request.headers):
        return JSONResponse({"error": "missing or wrong x-api-key header"}, status_code=401)
    customer_id = request.path_params["customer_id"]
    if not customer_id.strip() or len(customer_id) > 128:
        return JSONResponse({"error": "a customer id of 1 to 128 characters is required"}, status_code=400)
    service = bentoml.get_current_service()
    erased = forget_customer(service.paths, customer_id, service.recommender.store, service.recommender.log)
    return JSONResponse({"erased": erased})


SERVICE.mount_asgi_app(Starlette(routes=[Route("/{customer_id:path}", forget, methods=["DELETE"])]), path="/customers")
SERVICE.mount_asgi_app(CAMPAIGN_JOBS_APP, path="/campaign")
