"""The BentoML service: POST /recommend over the champion model and the online store."""

from __future__ import annotations

from typing import Literal

import bentoml
from pydantic import BaseModel, Field

from features.schema import CHANNELS
from nbo.config import get_paths
from serving.recommender import Recommender

Channel = Literal[CHANNELS]


class RequestContext(BaseModel):
    """What the page shows right now."""

    current_category: str | None = Field(None, description="Category the customer is browsing.",
                                         examples=["running_shoes"])
    cart_items: list[str] = Field(default_factory=list, max_length=100,
                                  description="Item ids in the customer's cart.", examples=[["i00042"]])


class RecommendRequest(BaseModel):
    """Who asks, where, and how many offers."""

    customer_id: str = Field(..., min_length=1, max_length=128, description="Known customer id.",
                             examples=["c000123"])
    channel: Channel = Field(..., description="Channel the offers will be shown in.", examples=["web"])
    k: int = Field(3, ge=1, le=20, description="How many offers to return.")
    context: RequestContext = Field(default_factory=RequestContext, description="Page context.")


class OfferOut(BaseModel):
    """One ranked offer."""

    offer_id: str = Field(..., description="Offer id.", examples=["o007"])
    score: float = Field(..., description="Predicted purchase probability in the offer's category.")
    expected_value: float = Field(..., description="score x the offer's value (expected margin).")
    reason: str = Field(..., description="Why this offer, in plain words.",
                        examples=["you viewed running_shoes 4 times in the last 7 days"])


class RecommendResponse(BaseModel):
    """The ranked offers for one customer."""

    customer_id: str = Field(..., description="The customer asked about.")
    model_version: str | None = Field(..., description="Registered model version that scored the offers.")
    fallback: bool = Field(..., description="True when offers come from popularity, not the model "
                                            "(unknown customer or no model).")
    offers: list[OfferOut] = Field(..., description="Best offer first.")


@bentoml.service(workers=1, traffic={"timeout": 10})
class NextBestOffer:
    """Next-best-offer decisions over HTTP."""

    def __init__(self) -> None:
        self.recommender = Recommender.from_home(get_paths())

    @bentoml.api(input_spec=RecommendRequest, output_spec=RecommendResponse)
    def recommend(self, **request) -> RecommendResponse:
        """Rank the eligible offers for a customer in a channel."""
        request = RecommendRequest.model_validate(request)
        decision = self.recommender.recommend(
            request.customer_id, request.channel, request.k, request.context.current_category,
            request.context.cart_items)
        return RecommendResponse.model_validate(decision, from_attributes=True)
