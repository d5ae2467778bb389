from serving.recommender import Decision, RankedOffer
from serving.service import RecommendResponse, respond


def test_the_response_is_what_validating_the_decision_gives():
    decisions = [
        Decision(
            "d1",
            "c1",
            "3",
            False,
            [RankedOffer("o1", 0.2, 1.5, "you bought tea", 0.9, True), RankedOffer("o2", 0.1, 0.5, "a good match")],
        ),
        Decision("d2", "c2", None, True, [], degraded=True),
    ]
    for decision in decisions:
        expected = RecommendResponse.model_validate(decision, from_attributes=True)
        assert respond(decision).model_dump_json() == expected.model_dump_json()
        assert RecommendResponse.model_validate_json(respond(decision).model_dump_json()) == expected
