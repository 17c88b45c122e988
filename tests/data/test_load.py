"""The name/path dispatch: names, every kind of folder, a seeded subset, clear errors."""

import pytest
import torch

from gradguard.data import load_dataset, train_test
from gradguard.errors import DataError


def test_names_are_case_insensitive_and_splits_are_the_loaders():
    train, test = train_test("Digits")
    assert load_dataset("digits").x.equal(train.x)
    assert load_dataset("digits", "test").y.equal(test.y)


def test_limit_keeps_a_seeded_subset_of_the_training_split():
    full = train_test("digits")[0]
    a, test = train_test("digits", limit=100, seed=3)
    assert len(a) == 100 and len(test) == len(train_test("digits")[1])
    assert a.x.equal(train_test("digits", limit=100, seed=3)[0].x)
    assert not a.x.equal(train_test("digits", limit=100, seed=4)[0].x)
    index = torch.randperm(len(full), generator=torch.Generator().manual_seed(3))[:100]
    assert a.y.equal(full.y[index])
    assert len(train_test("digits", limit=10**6)[0]) == len(full)


def test_missing_path_and_unknown_name(tmp_path):
    with pytest.raises(DataError, match="no such data set or path"):
        load_dataset(str(tmp_path / "absent"))
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(DataError, match="not an IDX"):
        load_dataset(str(tmp_path / "file.bin"))
    with pytest.raises(DataError, match="unknown split"):
        load_dataset("digits", "val")
