"""A multilayer perceptron: the classic target of first-layer analytic attacks."""

from __future__ import annotations

import math

from torch import Tensor, nn


class MLP(nn.Module):
    """``flatten -> fc1 -> ReLU -> fc2 -> ReLU -> head``."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        num_classes: int,
        width: int = 256,
        width2: int = 128,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(math.prod(image_shape), width)
        self.fc2 = nn.Linear(width, width2)
        self.head = nn.Linear(width2, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.fc1(x.flatten(1)).relu()
        return self.head(self.fc2(x).relu())
