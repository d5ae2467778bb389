import lightgbm as lgb
import numpy as np
import pytest

from serving.contributions import ContributionCache


@pytest.fixture(scope="module")
def booster():
    """A model with missing values, zeros and a categorical feature, like the purchase model's inputs."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 5))
    x[rng.random(x.shape) < 0.2] = np.nan
    x[rng.random(x.shape) < 0.2] = 0.0
    x[:, 4] = rng.integers(0, 6, len(x))
    y = (np.nan_to_num(x[:, 0]) + (x[:, 4] % 2) + rng.normal(size=len(x)) > 0.5).astype(int)
    return lgb.train(
        {"objective": "binary", "num_leaves": 15, "verbose": -1, "min_data_in_leaf": 20},
        lgb.Dataset(x, y, categorical_feature=[4]),
        num_boost_round=40,
    )


def rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(size=(n, 5)), 1)  # coarse values: many rows share their split decisions
    x[rng.random(x.shape) < 0.2] = np.nan
    x[rng.random(x.shape) < 0.2] = 0.0
    x[:, 4] = rng.integers(0, 7, n)  # 6: a category the model never saw
    return x


def test_cached_contributions_equal_lightgbm_treeshap(booster):
    cache = ContributionCache(booster)
    x = rows(400, 1)
    first, reused_first = cache.contributions(x)
    again, reused_again = cache.contributions(rows(400, 2))
    assert np.array_equal(first, booster.predict(x, pred_contrib=True))
    assert np.allclose(again, booster.predict(rows(400, 2), pred_contrib=True), rtol=0, atol=1e-12)
    assert reused_again > 0 and reused_first < 400
    first_copy = first.copy()
    first += 1.0  # the caller owns what it gets: changing it leaves the cache as it was
    cached, reused = cache.contributions(x)
    assert reused == 400 and np.array_equal(cached, first_copy)
    assert cache.contributions(x[:0])[0].shape == (0, 6)


def test_rows_share_a_key_only_when_every_split_goes_the_same_way(booster):
    cache = ContributionCache(booster)
    x = rows(2000, 3)
    keys = cache.keys(x)
    leaves = booster.predict(x, pred_leaf=True)
    contributions = booster.predict(x, pred_contrib=True)
    first_of = {}
    for i, key in enumerate(keys):
        j = first_of.setdefault(key, i)
        assert np.array_equal(leaves[i], leaves[j]) and np.allclose(contributions[i], contributions[j], atol=1e-12)
    assert len(first_of) < len(x)


def test_the_cache_stays_bounded(booster):
    cache = ContributionCache(booster, max_entries=10)
    cache.contributions(rows(300, 4))
    assert len(cache.entries) == 10
