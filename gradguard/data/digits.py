"""scikit-learn's handwritten digits (8 x 8, 1797 images): the embedded default."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits

from gradguard.data.dataset import Dataset


def load(test_fraction: float = 0.2) -> tuple[Dataset, Dataset]:
    """A fixed, stratified-by-shuffle split; images scaled from 0..16 to [0, 1]."""
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(1797))
    n_test = int(len(y) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return (Dataset(x[train], y[train], 10, "digits"), Dataset(x[test], y[test], 10, "digits"))
