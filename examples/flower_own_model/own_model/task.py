"""The client's own model and data: a small CNN with batch norm, scikit-learn's digits
as ``TensorDataset`` partitions (bundled with scikit-learn: nothing is downloaded)."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset


class Net(nn.Module):
    """conv -> batch norm -> ReLU -> pool -> fc -> ReLU -> head, for 1 x 8 x 8 images."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * 4 * 4, 64)
        self.head = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        return self.head(F.relu(self.fc(x.flatten(1))))


def load_data(partition: int, partitions: int) -> tuple[TensorDataset, TensorDataset]:
    """This client's share of the digits (train) and the common test split."""
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, test = order[:1400], order[1400:]
    mine = train[partition::partitions]
    return TensorDataset(x[mine], y[mine]), TensorDataset(x[test], y[test])


def train(
    model: nn.Module, data: TensorDataset, epochs: int = 1, lr: float = 0.1, seed: int = 0
) -> float:
    """Local SGD (batches shuffled by ``seed``); the mean training loss."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    total, n = 0.0, 0
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for x, y in DataLoader(data, batch_size=32, shuffle=True, generator=order):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            total, n = total + float(loss) * len(y), n + len(y)
    return total / max(n, 1)


@torch.no_grad()
def evaluate(model: nn.Module, data: TensorDataset) -> tuple[float, float]:
    """(loss, accuracy) on ``data``."""
    model.eval()
    x, y = data.tensors
    out = model(x)
    return float(F.cross_entropy(out, y)), float((out.argmax(1) == y).float().mean())
