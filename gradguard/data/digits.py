"""scikit-learn's handwritten digits (8 x 8, 1797 images): the embedded default."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from gradguard.data.dataset import Dataset


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """(images 1797 x 8 x 8 in 0..16, labels), read straight from the CSV scikit-learn ships:
    importing scikit-learn for ``load_digits`` costs seconds, paid again by every process of
    a simulated federation (Flower's Ray actors, NVFlare's sites)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.submodule_search_locations:
        path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",")
            return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target


def load(test_fraction: float = 0.2) -> tuple[Dataset, Dataset]:
    """A fixed, stratified-by-shuffle split; images scaled from 0..16 to [0, 1]."""
    images, target = _digits()
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(1797))
    n_test = int(len(y) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return (Dataset(x[train], y[train], 10, "digits"), Dataset(x[test], y[test], 10, "digits"))
