"""Data sets by name or path: the dispatcher over the loaders (digits, IDX, CIFAR, folder)."""

from __future__ import annotations

from pathlib import Path

import torch

from gradguard.data.dataset import Dataset
from gradguard.errors import DataError


def train_test(
    spec: str = "digits", *, limit: int | None = None, seed: int = 0
) -> tuple[Dataset, Dataset]:
    """Train and test splits of a data set named or found at ``spec``.

    ``limit`` keeps a seeded random subset of at most that many training examples.
    """
    train, test = _load(spec)
    if limit is not None and limit < len(train):
        g = torch.Generator().manual_seed(seed)
        train = train.subset(torch.randperm(len(train), generator=g)[:limit])
    return train, test


def load_dataset(spec: str = "digits", split: str = "train") -> Dataset:
    """One split (``train`` or ``test``) of a data set named or found at ``spec``."""
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}: use 'train' or 'test'")
    train, test = _load(spec)
    return train if split == "train" else test


def _load(spec: str) -> tuple[Dataset, Dataset]:
    # imported when a data set is loaded: digits pulls in scikit-learn
    from gradguard.data import cifar, digits, folder, idx

    name = spec.lower()
    if name == "digits":
        return digits.load()
    if name in ("fashion-mnist", "fashion_mnist", "fmnist"):
        return idx.load_named("fashion-mnist")
    if name == "mnist":
        return idx.load_named("mnist")
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"{spec}: no such data set or path (names: digits, fashion-mnist, mnist)")
    if idx.looks_like_idx(path):
        return idx.load_dir(path)
    if cifar.looks_like_cifar(path):
        return cifar.load_dir(path)
    if path.is_dir():
        return folder.load_dir(path)
    raise DataError(f"{spec}: not an IDX data set, CIFAR python batches or a folder of images")
