from types import SimpleNamespace

import pytest
from bentoml.exceptions import BentoMLException

from serving.service import recommend_needs_key, require_key


def context(headers: dict) -> SimpleNamespace:
    return SimpleNamespace(request=SimpleNamespace(headers=headers))


def test_the_key_is_checked_only_when_configured(monkeypatch):
    monkeypatch.delenv("NBO_API_KEY", raising=False)
    require_key(context({}))  # open when no key is configured
    monkeypatch.setenv("NBO_API_KEY", "s3cret")
    require_key(context({"x-api-key": "s3cret"}))
    for headers in ({}, {"x-api-key": "s3cre"}, {"x-api-key": "s3cret "}):
        with pytest.raises(BentoMLException) as refused:
            require_key(context(headers))
        assert refused.value.error_code == 401


def test_recommend_protection_is_a_setting(monkeypatch):
    monkeypatch.delenv("NBO_RECOMMEND_NEEDS_KEY", raising=False)
    assert not recommend_needs_key()
    monkeypatch.setenv("NBO_RECOMMEND_NEEDS_KEY", "true")
    assert recommend_needs_key()
