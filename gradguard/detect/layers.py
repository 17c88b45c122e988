"""Where the layers attacks target live in a template model (seed 000, appendix A.1).

Layers are found by module type in registration order, which for the zoo is also the
order of the forward pass: the first linear layer is the one closest to the input.
"""

from __future__ import annotations

from torch import nn


def linears(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def convs(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def batchnorms(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def attentions(model: nn.Module) -> list[str]:
    """Modules with separate ``q``, ``k``, ``v`` linear projections (``vit-tiny``)."""
    return [
        n
        for n, m in model.named_modules()
        if all(isinstance(getattr(m, a, None), nn.Linear) for a in ("q", "k", "v"))
    ]


def weight_layers(model: nn.Module) -> list[str]:
    """Every convolution and linear layer (the layers D-SNR inspects)."""
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
