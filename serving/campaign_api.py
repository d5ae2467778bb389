"""The campaign job's answer and GET /campaign/{job_id}: a Starlette route beside BentoML's POST routes (BentoML's
APIs answer POST only), mounted by serving.service."""

from __future__ import annotations

from typing import Literal

import bentoml
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from serving.campaign_jobs import MAX_PAGE_SIZE, Page, UnknownJob, read_page
from serving.errors import error_document
from serving.guard import key_matches

DEFAULT_PAGE_SIZE = 1000


class CampaignRow(BaseModel):
    customer_id: str
    offer_id: str
    uplift: float = Field(..., description="Predicted incremental effect of the offer on the outcome.")
    expected_value: float = Field(..., description="uplift x the offer's value.")


class CampaignJob(BaseModel):
    """A campaign job: its status; once done, its counts, what was sent and why, and one page of its rows."""

    job_id: str = Field(..., description="The job's id.")
    status: Literal["queued", "running", "done", "failed"] = Field(
        ..., description="queued or running: ask again; done: counts and rows below; failed: see `reason`."
    )
    status_url: str = Field(..., description="GET it to follow the job and read its rows page by page.")
    reason: str | None = Field(
        None, description="Why the job failed (a worker that stopped while planning it included)."
    )
    created_at: str = Field(..., description="When the job was started (ISO 8601, UTC).")
    started_at: str | None = None
    finished_at: str | None = None
    eligible: int | None = Field(
        None,
        description="Customers in the segment, opted in, not contacted this week and not in the global control group.",
    )
    control_held_out: int | None = Field(
        None,
        description="Customers otherwise eligible but in the global control group "
        "($NBO_CONTROL_SHARE): no campaign reaches them.",
    )
    selected: int | None = Field(None, description="Customers chosen (at most budget x eligible).")
    expected_incremental_value: float | None = None
    targeting: str | None = Field(
        None,
        description="What was sent and why: targeted by the uplift model only when, held out, "
        "it beat the best single offer and random targeting with 95 % "
        "confidence; otherwise the best single offer to a random share.",
    )
    rows: list[CampaignRow] = Field(
        default_factory=list, description="The chosen rows [offset, offset + page_size), best first."
    )
    offset: int = Field(0, description="Position of the first row of `rows` among the chosen rows.")
    next_offset: int | None = Field(
        None, description="The offset of the next page; null on the last page and until the job is done."
    )


def job_answer(state: dict, page: Page | None = None) -> CampaignJob:
    """What the API answers about a job: its state, with one page of its rows when given."""
    known = {name: state[name] for name in CampaignJob.model_fields if name in state}
    rows = [CampaignRow(**row) for row in page.rows] if page else []
    return CampaignJob(
        **known,
        status_url=f"/campaign/{state['job_id']}",
        rows=rows,
        offset=page.offset if page else 0,
        next_offset=page.next_offset if page else None,
    )


def refusal(status: int, message: str, code: str | None = None) -> JSONResponse:
    return JSONResponse(error_document(status, message, code=code), status_code=status)


def read_campaign(request: Request) -> JSONResponse:
    """GET /campaign/{job_id}?offset=0&page_size=1000: a job's status, counts and one page of its rows; the API
    key is required, as for POST /campaign."""
    if not key_matches(request.headers.get("x-api-key", "").encode()):
        return refusal(401, "missing or wrong x-api-key header")
    try:
        offset = int(request.query_params.get("offset", 0))
        page_size = int(request.query_params.get("page_size", DEFAULT_PAGE_SIZE))
        page = read_page(bentoml.get_current_service().paths, request.path_params["job_id"], offset, page_size)
    except UnknownJob:
        return refusal(404, f"no campaign job '{request.path_params['job_id']}'", code="unknown_job")
    except ValueError:
        return refusal(
            400, f"offset must be an integer >= 0 and page_size an integer in [1, {MAX_PAGE_SIZE}]", "invalid_request"
        )
    return JSONResponse(job_answer(page.state, page).model_dump(mode="json"))


CAMPAIGN_JOBS_APP = Starlette(routes=[Route("/{job_id}", read_campaign, methods=["GET"])])
