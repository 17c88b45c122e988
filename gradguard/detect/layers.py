"""Where the layers attacks target live in a template model (seed 000, appendix A.1).

Layers are found by module type in registration order, which for the zoo is also the
order of the forward pass: the first linear layer is the one closest to the input. Each
function takes the model or its ``dict(model.named_modules())`` (one walk, several lookups).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import nn

Modules = nn.Module | Mapping[str, nn.Module]


def _named(model: Modules) -> Iterable[tuple[str, nn.Module]]:
    return model.named_modules() if isinstance(model, nn.Module) else model.items()


def linears(model: Modules) -> list[str]:
    return [n for n, m in _named(model) if isinstance(m, nn.Linear)]


def convs(model: Modules) -> list[str]:
    return [n for n, m in _named(model) if isinstance(m, nn.Conv2d)]


def batchnorms(model: Modules) -> list[str]:
    return [n for n, m in _named(model) if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def attentions(model: Modules) -> list[str]:
    """Modules with separate ``q``, ``k``, ``v`` linear projections (``vit-tiny``)."""
    return [
        n
        for n, m in _named(model)
        if all(isinstance(getattr(m, a, None), nn.Linear) for a in ("q", "k", "v"))
    ]


def weight_layers(model: Modules) -> list[str]:
    """Every convolution and linear layer (the layers D-SNR inspects)."""
    return [n for n, m in _named(model) if isinstance(m, (nn.Linear, nn.Conv2d))]
