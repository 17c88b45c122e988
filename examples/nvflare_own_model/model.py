"""The user's own model and data: a small BatchNorm CNN on scikit-learn's 8x8 digits."""

import torch
from sklearn.datasets import load_digits
from torch import nn

SITES = 2


class Net(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(16 * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def site_data(site: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The site's images (N x 1 x 8 x 8 in [0, 1]) and labels: site-k holds every SITES-th
    image of the first 1500, starting at k - 1; the rest is the test set."""
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target)
    if site == "test":
        return x[1500:], y[1500:]
    k = int(site.rsplit("-", 1)[1]) - 1
    return x[:1500][k::SITES], y[:1500][k::SITES]


def guard_data(site: str):
    """The site's data as the Guard takes it."""
    from gradguard.data import Dataset

    x, y = site_data(site)
    return Dataset(x, y, 10, site)
