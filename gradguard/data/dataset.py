"""The Dataset type and the name/path dispatcher."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from gradguard.errors import DataError


@dataclass(frozen=True)
class Dataset:
    """Images ``x`` (float32, N x C x H x W in [0, 1]) and labels ``y`` (int64, N)."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    name: str

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.x.dtype != torch.float32:
            raise DataError(
                f"{self.name}: images must be float32 N x C x H x W, got "
                f"{tuple(self.x.shape)} {self.x.dtype}"
            )
        if self.y.shape != (self.x.shape[0],):
            raise DataError(f"{self.name}: {self.x.shape[0]} images but {self.y.numel()} labels")
        if self.x.shape[0] == 0:
            raise DataError(f"{self.name}: the data set is empty")

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    def subset(self, index: torch.Tensor | list[int], name: str | None = None) -> Dataset:
        index = torch.as_tensor(index, dtype=torch.long)
        return Dataset(self.x[index], self.y[index], self.num_classes, name or self.name)


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
