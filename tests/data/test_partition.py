"""Partitions: every index exactly once, deterministic under a seed, the skew they promise."""

import numpy as np
import pytest
import torch

from gradguard.data import Dataset, partition, train_test
from gradguard.errors import GradguardError


@pytest.fixture(scope="module")
def digits():
    return train_test("digits")[0]


def _tagged(data: Dataset) -> Dataset:
    # the example's index in pixel (0,0,0) so each part reveals which indices it holds
    x = data.x.clone()
    x[:, 0, 0, 0] = torch.arange(len(data), dtype=torch.float32)
    return Dataset(x, data.y, data.num_classes, data.name)


def _indices(parts):
    return [p.x[:, 0, 0, 0].long().tolist() for p in parts]


@pytest.mark.parametrize("scheme", ["iid", "dirichlet:0.5", "dirichlet:0.05", "shards:2"])
def test_every_index_exactly_once_and_deterministic(digits, scheme):
    data = _tagged(digits)
    parts = partition(data, 10, scheme, seed=3)
    idx = _indices(parts)
    flat = sorted(i for p in idx for i in p)
    assert flat == list(range(len(data)))
    assert all(len(p) >= 1 for p in parts)
    for p, ids in zip(parts, idx, strict=True):
        assert torch.equal(p.y, data.y[ids])
    assert _indices(partition(data, 10, scheme, seed=3)) == idx
    assert _indices(partition(data, 10, scheme, seed=4)) != idx


def test_iid_balanced_and_dirichlet_skewed(digits):
    iid = partition(digits, 5, "iid")
    assert max(len(p) for p in iid) - min(len(p) for p in iid) <= 1

    def mean_classes(parts, thresh=0.05):
        return np.mean(
            [(torch.bincount(p.y, minlength=10) / len(p) > thresh).sum().item() for p in parts]
        )

    assert mean_classes(iid) == 10
    assert mean_classes(partition(digits, 10, "dirichlet:0.1")) < 6
    shards = partition(digits, 10, "shards:2")
    assert all(len(p.y.unique()) <= 4 for p in shards)


def test_bad_schemes(digits):
    for scheme, word in [
        ("zipf", "unknown partition"),
        ("dirichlet:x", "not a number"),
        ("dirichlet:-1", "positive"),
        ("shards:0", "positive"),
        ("shards:1000", "needs"),
    ]:
        with pytest.raises(GradguardError, match=word):
            partition(digits, 10, scheme)
    with pytest.raises(GradguardError, match="cannot split"):
        partition(digits, 0)
    with pytest.raises(GradguardError, match="cannot split"):
        partition(digits.subset([0, 1]), 3)


def test_digits_and_limit():
    train, test = train_test("digits")
    assert train.x.shape[1:] == (1, 8, 8) and len(train) + len(test) == 1797
    assert float(train.x.max()) <= 1 and float(train.x.min()) >= 0
    small, _ = train_test("digits", limit=100, seed=1)
    assert len(small) == 100
    assert torch.equal(train_test("digits", limit=100, seed=1)[0].x, small.x)


def test_dataset_validates_shapes():
    from gradguard.errors import DataError

    with pytest.raises(DataError, match="N x C x H x W"):
        Dataset(torch.zeros(3, 8, 8), torch.zeros(3, dtype=torch.long), 10, "bad")
    with pytest.raises(DataError, match="3 images but 2 labels"):
        Dataset(torch.zeros(3, 1, 8, 8), torch.zeros(2, dtype=torch.long), 10, "bad")
    with pytest.raises(DataError, match="empty"):
        Dataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long), 10, "bad")
