"""CIFAR-style ResNets (He et al. 2016) with a 3x3 stem and a choice of normalisation."""

from __future__ import annotations

from torch import Tensor, nn

from gradguard.models.norms import norm2d


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = norm2d(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = norm2d(norm, cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), norm2d(norm, cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.norm1(self.conv1(x)).relu()
        return (self.norm2(self.conv2(out)) + self.shortcut(x)).relu()


class Stem(nn.Module):
    def __init__(self, cin: int, cout: int, norm: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm = norm2d(norm, cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x)).relu()


class ResNet(nn.Module):
    """``stem -> layers (stages of BasicBlocks, stride 2 after the first) -> pool -> head``."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        num_classes: int,
        widths: tuple[int, ...] = (64, 128, 256, 512),
        blocks: tuple[int, ...] = (2, 2, 2, 2),
        norm: str = "batch",
    ) -> None:
        super().__init__()
        self.stem = Stem(image_shape[0], widths[0], norm)
        stages, cin = [], widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks, strict=True)):
            stage = [
                BasicBlock(
                    cin if j == 0 else width, width, (1 if i == 0 else 2) if j == 0 else 1, norm
                )
                for j in range(n)
            ]
            stages.append(nn.Sequential(*stage))
            cin = width
        self.layers = nn.Sequential(*stages)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layers(self.stem(x))
        return self.head(x.mean(dim=(2, 3)))
