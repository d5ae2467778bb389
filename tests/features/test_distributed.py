import json
import shutil

import dask
import dask.dataframe as dd
import pandas as pd
import pytest

from features.definitions import FEATURES
from features.distributed import build_training_set_dask, sort_training_set, write_training_set_dask
from features.offline import build_training_set, choose_cutoffs
from features.training_set import TrainingSet, read_training_set
from simulator.generate import simulate


@pytest.fixture(scope="module")
def small_shop(tmp_path_factory):
    """A small simulated retailer: its raw folder, events and categories."""
    raw = tmp_path_factory.mktemp("raw")
    simulate(raw, 300, 90, seed=5)
    events = pd.read_parquet(raw / "events.parquet")
    categories = sorted(pd.read_parquet(raw / "items.parquet")["category"].unique().tolist())
    return raw, events, categories


@pytest.fixture(scope="module")
def cluster():
    """Two in-process workers when dask.distributed is installed, the threaded scheduler otherwise."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        with dask.config.set(scheduler="threads"):
            yield None
        return
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as local:
        with Client(local) as client:
            yield client


def assert_same_training_set(actual: TrainingSet, expected: TrainingSet) -> None:
    for table in ("rows", "customers"):
        pd.testing.assert_frame_equal(getattr(actual, table), getattr(expected, table), check_exact=False, rtol=1e-9)


def test_dask_build_equals_the_pandas_build(small_shop, cluster):
    raw, events, categories = small_shop
    cutoffs = choose_cutoffs(events, 3, 7)
    expected = build_training_set(events, cutoffs, 7, categories, list(FEATURES))
    from_parquet = build_training_set_dask(
        raw / "events.parquet", cutoffs, 7, categories, list(FEATURES), npartitions=3
    )
    from_frame = build_training_set_dask(
        dd.from_pandas(events, npartitions=4), cutoffs, 7, categories, list(FEATURES), npartitions=2
    )
    assert len(expected.rows) > 1000 and expected.rows["label"].sum() > 0
    assert len(expected.rows) == len(expected.customers) * len(categories)
    assert_same_training_set(from_parquet, expected)
    assert_same_training_set(from_frame, expected)


def test_parquet_written_by_the_workers_equals_the_pandas_build(small_shop, cluster, tmp_path):
    raw, events, categories = small_shop
    cutoffs = choose_cutoffs(events, 3, 7)
    expected = build_training_set(events, cutoffs, 7, categories, list(FEATURES))
    write_training_set_dask(
        raw / "events.parquet", tmp_path / "training", cutoffs, 7, categories, list(FEATURES), npartitions=3
    )
    for table in ("rows", "customers"):
        assert len(list((tmp_path / "training" / table).glob("*.parquet"))) == 3
    assert_same_training_set(sort_training_set(read_training_set(tmp_path / "training"), categories), expected)


def test_the_feature_stage_on_dask_publishes_the_pandas_training_set_with_its_lineage(tmp_path, cluster):
    from features.distributed import build_features_dask
    from features.pipeline import build_features
    from nbo.config import get_paths

    dask_home, pandas_home = get_paths(tmp_path / "dask"), get_paths(tmp_path / "pandas")
    simulate(dask_home.raw, 200, 60, seed=8)
    with pytest.raises(FileNotFoundError, match="no items"):  # tables the Dask build does not derive
        (dask_home.raw / "items.parquet").rename(tmp_path / "items.parquet")
        build_features_dask(dask_home)
    (tmp_path / "items.parquet").rename(dask_home.raw / "items.parquet")
    shutil.copytree(dask_home.raw, pandas_home.raw)
    lineage = build_features_dask(dask_home, 3, 7, npartitions=2)
    expected = build_features(pandas_home, 3, 7)
    assert {k: lineage[k] for k in ("events", "rows", "customer_rows", "positives", "cutoffs")} == {
        k: expected[k] for k in ("events", "rows", "customer_rows", "positives", "cutoffs")
    }
    assert json.loads(dask_home.training_set.with_suffix(".json").read_text()) == lineage
    categories = sorted(read_training_set(pandas_home.training_set).rows["category"].unique())
    assert_same_training_set(
        sort_training_set(read_training_set(dask_home.training_set), categories),
        read_training_set(pandas_home.training_set),
    )
