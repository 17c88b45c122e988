"""The ``norm=`` choice for convolutional families."""

from __future__ import annotations

from torch import nn


def norm2d(kind: str, channels: int) -> nn.Module:
    """``batch`` (couples samples in a batch), ``group`` (8 groups or fewer), ``layer``
    (one group: per-sample over C, H, W), ``none``."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")
