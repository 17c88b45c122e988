"""The Dataset type: images in [0, 1] and their labels."""

from __future__ import annotations

from dataclasses import dataclass

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
