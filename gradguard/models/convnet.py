"""A small LeNet-like CNN that downsamples by a strided convolution, not pooling.

A stride-2 3x3 convolution with four shifted Dirac kernels per channel is a lossless
space-to-depth map, so this net admits the identity-convolution pass-through of
Boenisch et al. (seed 000, appendix A.1.2) as every strided-conv CNN does.
"""

from __future__ import annotations

from torch import Tensor, nn


class ConvNet(nn.Module):
    """``conv1 (3x3) -> ReLU -> conv2 (3x3, stride 2) -> ReLU -> fc1 -> ReLU -> head``."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        num_classes: int,
        channels: tuple[int, int] = (16, 32),
        width: int = 256,
    ) -> None:
        super().__init__()
        c, h, w = image_shape
        self.conv1 = nn.Conv2d(c, channels[0], 3, padding=1)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 3, stride=2, padding=1)
        self.fc1 = nn.Linear(channels[1] * ((h + 1) // 2) * ((w + 1) // 2), width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv2(self.conv1(x).relu()).relu()
        return self.head(self.fc1(x.flatten(1)).relu())
